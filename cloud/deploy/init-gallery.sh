#!/bin/sh
# Runs once, when the gallery database's volume is first created (docker-entrypoint-initdb.d): the vector
# extension, and the role the servers connect as, which may create and use the gallery's tables and nothing else.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v password="$(cat "${GALLERY_DB_PASSWORD_FILE:-/run/secrets/gallery_db_password}")" <<'SQL'
CREATE EXTENSION IF NOT EXISTS vector;
CREATE ROLE facelink LOGIN PASSWORD :'password';
GRANT CREATE, USAGE ON SCHEMA public TO facelink;
SQL
