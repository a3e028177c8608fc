#!/usr/bin/env bash
# Make a development CA and a server certificate for the broker (and optionally a client
# certificate for one device). For production, use your organisation's PKI.
#   deploy/mosquitto/make-dev-certs.sh OUT_DIR [BROKER_HOSTNAME] [DEVICE_ID]
set -euo pipefail
out=${1:?output directory}
host=${2:-localhost}
device=${3:-}
mkdir -p "$out"
cd "$out"
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=medmesh dev CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:%s,IP:127.0.0.1\n' "$host" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile server.ext -out server.crt 2>/dev/null
if [ -n "$device" ]; then
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$device" -keyout "$device.key" \
        -out "$device.csr" 2>/dev/null
    openssl x509 -req -in "$device.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
        -out "$device.crt" 2>/dev/null
fi
chmod 600 ./*.key
echo "certificates in $out"
