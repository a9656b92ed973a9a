# Test certificates for the TLS-requiring servers of scripts/mariadb.sh and
# scripts/postgres.sh (MARIADB_TLS=1 / POSTGRES_TLS=1): a private CA, a
# server certificate for localhost and 127.0.0.1, and a client
# certificate, made with openssl. Sourced, not run.

# make_certs DIR: write ca.pem, server.pem, server.key, client.pem and
# client.key (CN "outboxrelay") into DIR, unless they are already there.
make_certs() {
	local dir=$1
	[[ -s $dir/ca.pem && -s $dir/server.key && -s $dir/client.key ]] && return 0
	if ! command -v openssl >/dev/null 2>&1; then
		((EUID == 0)) && command -v apt-get >/dev/null 2>&1 || die "openssl is needed to make test certificates (apt-get install openssl)"
		log "openssl not found: installing it"
		(
			command -v flock >/dev/null 2>&1 && flock -w 900 9
			command -v openssl >/dev/null 2>&1 && exit 0
			apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0 openssl >&2
		) 9>>"${TMPDIR:-/tmp}/outboxrelay-apt.lock" || die "apt-get install openssl failed"
	fi
	mkdir -p "$dir"
	local ext=$dir/server.ext
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$ext"
	{
		openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=outboxrelay test CA' \
			-keyout "$dir/ca.key" -out "$dir/ca.pem" &&
			openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' \
				-keyout "$dir/server.key" -out "$dir/server.csr" &&
			openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
				-days 3650 -extfile "$ext" -out "$dir/server.pem" &&
			openssl req -newkey rsa:2048 -nodes -subj '/CN=outboxrelay' \
				-keyout "$dir/client.key" -out "$dir/client.csr" &&
			openssl x509 -req -in "$dir/client.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
				-days 3650 -out "$dir/client.pem"
	} >"$dir/openssl.log" 2>&1 || { tail -n 20 "$dir/openssl.log" >&2; die "openssl failed (log: $dir/openssl.log)"; }
	rm -f "$dir"/*.csr "$ext"
	chmod 600 "$dir"/*.key
}
