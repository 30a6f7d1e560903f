#!/bin/sh
# Test certificates for the C TLS tests (and an example of making them): a CA, a server
# certificate it signs for localhost and 127.0.0.1, a client certificate (mutual TLS), another
# CA (the "wrong CA"), and the server certificate's SHA-256 fingerprint.
#   tests/c/make-certs.sh DIR
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

for ca in ca other-ca; do
    openssl req -x509 $ec -keyout $ca.key -out $ca.pem -days 3650 -subj "/CN=mtmux test $ca" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        2>/dev/null
done

issue() { # NAME SUBJECT EXTENSIONS
    openssl req $ec -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
issue server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue client "mtmux test client" "extendedKeyUsage=clientAuth"

openssl x509 -in server.pem -noout -fingerprint -sha256 | cut -d= -f2 > server.fp
