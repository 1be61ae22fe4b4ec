-- Run once by the postgres image on an empty data folder (as POSTGRES_USER, in POSTGRES_DB):
-- bibikos_api's database beside core. The migration container fills both.
CREATE DATABASE bibikos;
