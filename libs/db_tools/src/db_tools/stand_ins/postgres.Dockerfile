# Local stand-in for the official postgres image, built only when it cannot be pulled (no
# registry reachable): Debian's PostgreSQL (15 on bookworm) behind an entrypoint with the
# official image's interface: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB,
# POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD, PGDATA and /docker-entrypoint-initdb.d.
ARG BASE
FROM ${BASE}
RUN set -eu; \
    mkdir -p /etc/postgresql-common; \
    # Debian's package would create and start a cluster of its own: the entrypoint does.
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
    ln -s "$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)" /usr/local/lib/postgresql-bin; \
    mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql; \
    chmod 3777 /var/run/postgresql; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/local/lib/postgresql-bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
VOLUME /var/lib/postgresql/data
LABEL org.data-layer.stand-in="postgres from Debian packages"
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
