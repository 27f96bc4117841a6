-- Runs once, when the PostgreSQL volume is first created: the MLflow and Prefect servers get
-- their own databases beside the commerce one (POSTGRES_DB=cartwise, which also holds the
-- Feast SQL registry).
CREATE DATABASE mlflow OWNER cartwise;
CREATE DATABASE prefect OWNER cartwise;
