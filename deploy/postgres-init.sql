-- One database per service. The postgres image runs this once, as POSTGRES_USER, when it
-- initialises an empty data volume (/docker-entrypoint-initdb.d); later starts skip it.
-- Each service's tables are created by its migrations (`clinic migrate <service>`), not here.
CREATE DATABASE scheduling;
CREATE DATABASE sessions;
CREATE DATABASE records;
CREATE DATABASE notifications;
-- Keycloak's own (deploy/keycloak): users, sessions, the clinic realm.
CREATE DATABASE keycloak;
