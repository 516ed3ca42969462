# imapferry dev image: Debian 12 with the project's build and test
# dependencies, the project built from this checkout, and a throw-away TLS
# certificate for the dev stack's Dovecots (docker-compose.yml).
FROM debian:12
COPY scripts/deps.sh /tmp/deps.sh
RUN bash /tmp/deps.sh && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . /src
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build -j"$(nproc)"
RUN mkdir -p /etc/imapferry/tls /var/mail \
 && cp config/docker/dovecot.conf config/docker/users config/docker/master-users /etc/imapferry/ \
 && openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
      -keyout /etc/imapferry/tls/server.key -out /etc/imapferry/tls/server.pem \
 && chown nobody:nogroup /var/mail
