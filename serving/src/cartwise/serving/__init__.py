"""Cartwise Ray Serve application: the commerce API as the ingress deployment.

Importing this package is cheap; ``cartwise.serving.app`` and ``cartwise.serving.launch``
import Ray when they are used.
"""
