"""A/B experiments over the recommendation and search surfaces."""
