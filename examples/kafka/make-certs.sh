#!/bin/sh
# Makes the demo CA and the broker's certificate for the SECURE (SASL_SSL)
# listener of docker-compose.yml, once, into DIR (a compose volume):
#   ca.pem               the CA: the relay's kafka.tls.ca_file
#   kafka.keystore.pem   the broker's key (PKCS#8, unencrypted) and certificate,
#                        for ssl.keystore.type=PEM
# A throwaway demo CA: use your own PKI for anything real.
set -eu
dir=${1:?usage: make-certs.sh DIR}
[ -s "$dir/kafka.keystore.pem" ] && exit 0
command -v openssl >/dev/null 2>&1 || apk add --no-cache openssl >/dev/null
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj '/CN=outboxrelay demo CA' -keyout ca.key -out ca.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out kafka.key
openssl req -new -key kafka.key -subj '/CN=kafka' -out kafka.csr
printf 'subjectAltName=DNS:kafka,DNS:localhost\nextendedKeyUsage=serverAuth\n' >kafka.ext
openssl x509 -req -in kafka.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -extfile kafka.ext -out kafka.pem
cat kafka.key kafka.pem >kafka.keystore.pem
rm -f kafka.csr kafka.ext ca.key kafka.key
# The broker (uid 1000) and the relay (uid 65532) run as other users.
chmod 644 ca.pem kafka.pem kafka.keystore.pem
