"""Real-world Dockerfiles, built and run with the lamina command as a user would.

Each Dockerfile keeps the structure of a popular project's (the official
nginx, redis and postgres images and their entrypoint scripts, a Python app
staging pip wheels in a builder stage, a Node app laid out like
``docker init``'s, a Go service shipped ``FROM scratch``, a static site, a
healthchecked worker written with heredocs), rewritten onto a local
busybox base so no network is needed: package installs become busybox
commands, ``adduser`` an ``/etc/passwd`` line, ``gosu`` busybox ``su``, and
compilers and package managers small shell scripts that do their part of
the job. Each test builds, runs the image and checks its output and
config, then builds again and expects every step from cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from helpers.cli import lamina
from helpers.images import busybox_rootfs_tar

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]

BASE = """\
FROM busybox:test
RUN mkdir -p /usr/bin /sbin /usr/sbin /usr/local/bin && /bin/busybox --install -s
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
"""

# tianon/gosu's job, done by busybox su: run a command as a user, environment kept
GOSU = """\
#!/bin/sh
user=$1; shift
exec su -s /bin/sh -c 'exec "$@"' -- "$user" sh "$@"
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module: busybox:test, and alpine:local with every busybox applet installed."""
    work = tmp_path_factory.mktemp("realworld")
    store = work / "store"
    (work / "rootfs.tar").write_bytes(busybox_rootfs_tar())
    lamina(store, "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["/bin/sh"]', str(work / "rootfs.tar"), "busybox:test")
    base = work / "base"
    base.mkdir()
    (base / "Dockerfile").write_text(BASE)
    lamina(store, "build", "-q", "-t", "alpine:local", str(base))
    return store


def project(path: Path, files: dict[str, str | bytes], executable: tuple[str, ...] = ()) -> Path:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        target.chmod(0o755 if name in executable else 0o644)
    return path


def build(root: Path, ctx: Path, tag: str, *args: str) -> str:
    """Build twice: the second build must take every step from the cache and give the same image."""
    first = lamina(root, "build", "--progress", "plain", "-t", tag, *args, str(ctx)).stdout
    image_id = inspect(root, tag)["Id"]
    again = lamina(root, "build", "--progress", "plain", "-t", tag, *args, str(ctx)).stdout
    steps = [line for line in again.splitlines() if line.startswith("Step ")]
    # FROM and ONBUILD (recorded in the config only, as BuildKit does) are not cached steps
    uncached = [line for line in steps if " : FROM " in line or " : ONBUILD " in line]
    assert "Cache miss" not in again, again
    assert again.count(" ---> Using cache") == len(steps) - len(uncached), again
    assert inspect(root, tag)["Id"] == image_id
    return first


def inspect(root: Path, name: str) -> dict:  # type: ignore[type-arg]
    found: list[dict] = json.loads(lamina(root, "inspect", name).stdout)  # type: ignore[type-arg]
    return found[0]


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lamina(root, "run", "--rm", *args, check=check)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# nginx ------------------------------------------------------------------------------------

NGINX_DOCKERFILE = """\
FROM alpine:local

LABEL maintainer="NGINX Docker Maintainers <docker-maint@nginx.com>"

ENV NGINX_VERSION=1.25.3
ENV PKG_RELEASE=1

RUN set -x \\
# create nginx user/group first, to be consistent throughout docker variants
    && echo 'nginx:x:101:101:nginx user:/nonexistent:/bin/false' >> /etc/passwd \\
    && echo 'nginx:x:101:' >> /etc/group \\
    && mkdir -p /etc/nginx/conf.d /var/cache/nginx /var/log/nginx /usr/share/nginx/html \\
    && printf '#!/bin/sh\\necho "nginx/%s: $*"\\ncat /etc/nginx/conf.d/*.conf\\n' "$NGINX_VERSION" > /usr/sbin/nginx \\
    && chmod +x /usr/sbin/nginx \\
# forward request and error logs to docker log collector
    && ln -sf /dev/stdout /var/log/nginx/access.log \\
    && ln -sf /dev/stderr /var/log/nginx/error.log \\
# create a docker-entrypoint.d directory
    && mkdir /docker-entrypoint.d

COPY docker-entrypoint.sh /
COPY 10-listen-on-ipv6-by-default.sh /docker-entrypoint.d
COPY 20-envsubst-on-templates.sh /docker-entrypoint.d
COPY default.conf.template /etc/nginx/templates/
ENTRYPOINT ["/docker-entrypoint.sh"]

EXPOSE 80

STOPSIGNAL SIGQUIT

CMD ["nginx", "-g", "daemon off;"]
"""

NGINX_ENTRYPOINT = """\
#!/bin/sh
# vim:sw=4:ts=4:et

set -e

entrypoint_log() {
    if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
        echo "$@"
    fi
}

if [ "$1" = "nginx" ] || [ "$1" = "nginx-debug" ]; then
    if find "/docker-entrypoint.d/" -mindepth 1 -maxdepth 1 -type f | head -n 1 | read v; then
        entrypoint_log "$0: /docker-entrypoint.d/ is not empty, will attempt to perform configuration"

        entrypoint_log "$0: Looking for shell scripts in /docker-entrypoint.d/"
        find "/docker-entrypoint.d/" -follow -type f -print | sort -V | while read -r f; do
            case "$f" in
                *.envsh)
                    if [ -x "$f" ]; then
                        entrypoint_log "$0: Sourcing $f";
                        . "$f"
                    else
                        entrypoint_log "$0: Ignoring $f, not executable";
                    fi
                    ;;
                *.sh)
                    if [ -x "$f" ]; then
                        entrypoint_log "$0: Launching $f";
                        "$f"
                    else
                        entrypoint_log "$0: Ignoring $f, not executable";
                    fi
                    ;;
                *) entrypoint_log "$0: Ignoring $f";;
            esac
        done

        entrypoint_log "$0: Configuration complete; ready for start up"
    else
        entrypoint_log "$0: No files found in /docker-entrypoint.d/, skipping configuration"
    fi
fi

exec "$@"
"""

NGINX_TEMPLATES = """\
#!/bin/sh
set -e
ME=$(basename "$0")
template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
[ -d "$template_dir" ] || exit 0
find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
    relative_path="${template#"$template_dir/"}"
    output_path="$output_dir/${relative_path%"$suffix"}"
    echo "$ME: Running envsubst on $template to $output_path"
    # busybox has no envsubst: sed replaces the ${VAR}s this template uses
    sed -e "s|\\${NGINX_HOST}|${NGINX_HOST:-localhost}|g" -e "s|\\${NGINX_PORT}|${NGINX_PORT:-80}|g" \\
        "$template" > "$output_path"
done
"""


def test_nginx_official_image_layout(root: Path, tmp_path: Path) -> None:
    ctx = project(tmp_path, {
        "Dockerfile": NGINX_DOCKERFILE,
        "docker-entrypoint.sh": NGINX_ENTRYPOINT,
        "10-listen-on-ipv6-by-default.sh": '#!/bin/sh\necho "$(basename "$0"): info: IPv6 listen already enabled"\n',
        "20-envsubst-on-templates.sh": NGINX_TEMPLATES,
        "default.conf.template": "server {\n    listen ${NGINX_PORT};\n    server_name ${NGINX_HOST};\n}\n",
    }, executable=("docker-entrypoint.sh", "10-listen-on-ipv6-by-default.sh", "20-envsubst-on-templates.sh"))
    build(root, ctx, "nginx:rw")
    out = run(root, "-e", "NGINX_HOST=example.org", "-e", "NGINX_PORT=8080", "nginx:rw").stdout
    assert "/docker-entrypoint.sh: Launching /docker-entrypoint.d/10-listen-on-ipv6-by-default.sh" in out
    assert "20-envsubst-on-templates.sh: Running envsubst on /etc/nginx/templates/default.conf.template" in out
    assert "nginx/1.25.3: -g daemon off;" in out
    assert "    listen 8080;\n    server_name example.org;" in out
    assert run(root, "nginx:rw", "cat", "/etc/passwd").stdout.endswith("nginx:x:101:101:nginx user:/nonexistent:/bin/false\n")
    config = inspect(root, "nginx:rw")["Config"]
    assert config["Entrypoint"] == ["/docker-entrypoint.sh"] and config["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert config["StopSignal"] == "SIGQUIT" and config["ExposedPorts"] == {"80/tcp": {}}
    assert config["Labels"] == {"maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>"}
    assert "NGINX_VERSION=1.25.3" in config["Env"]


# redis --------------------------------------------------------------------------------------

REDIS_DOCKERFILE = """\
FROM alpine:local

# add our user and group first to make sure their IDs get assigned consistently, regardless of whatever dependencies get added
RUN set -eux; \\
	echo 'redis:x:999:1000::/home/redis:/bin/sh' >> /etc/passwd; \\
	echo 'redis:x:1000:' >> /etc/group; \\
	mkdir -p /home/redis; \\
	chown redis:redis /home/redis

# grab gosu for easy step-down from root
COPY --chmod=755 gosu /usr/local/bin/gosu
RUN set -eux; gosu nobody true 2>/dev/null || gosu redis true

ARG REDIS_VERSION=7.2.4
ENV REDIS_VERSION=$REDIS_VERSION
ARG REDIS_DOWNLOAD_SHA

COPY redis-$REDIS_VERSION.tar.gz /usr/src/redis.tar.gz
RUN set -eux; \\
	\\
	echo "$REDIS_DOWNLOAD_SHA *usr/src/redis.tar.gz" | (cd / && sha256sum -c -); \\
	mkdir -p /usr/src/redis; \\
	tar -xzf /usr/src/redis.tar.gz -C /usr/src/redis --strip-components=1; \\
	rm /usr/src/redis.tar.gz; \\
	\\
	cd /usr/src/redis; \\
	sh ./configure PREFIX=/usr/local; \\
	install -m 755 src/redis-server src/redis-cli /usr/local/bin/ 2>/dev/null \\
		|| { cp src/redis-server src/redis-cli /usr/local/bin/ && chmod 755 /usr/local/bin/redis-*; }; \\
	cd /; \\
	rm -r /usr/src/redis; \\
	\\
	redis-cli --version; \\
	redis-server --version

RUN mkdir /data && chown redis:redis /data
VOLUME /data
WORKDIR /data

COPY docker-entrypoint.sh /usr/local/bin/
ENTRYPOINT ["docker-entrypoint.sh"]

EXPOSE 6379
CMD ["redis-server"]
"""

REDIS_ENTRYPOINT = """\
#!/bin/sh
set -e

# first arg is `-f` or `--some-option`
# or first arg is `something.conf`
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

# allow the container to be started with `--user`
if [ "$1" = 'redis-server' -a "$(id -u)" = '0' ]; then
	find . \\! -user redis -exec chown redis '{}' +
	exec gosu redis "$0" "$@"
fi

# set an appropriate umask (if one isn't set already)
um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

exec "$@"
"""


def _redis_source(version: str) -> bytes:
    server = f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "Redis server v={version}"; exit 0; }}\n' \
             'echo "Ready to accept connections tcp as $(id -un) in $(pwd) (umask $(umask)) args: $*"\n'
    files = {"configure": "#!/bin/sh\necho \"configured with $*\"\n", "src/redis-server": server,
             "src/redis-cli": f'#!/bin/sh\necho "redis-cli {version}"\n'}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"redis-{version}/{name}")
            info.size, info.mode = len(text), 0o755
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def test_redis_official_image_with_gosu_entrypoint(root: Path, tmp_path: Path) -> None:
    source = _redis_source("7.2.4")
    ctx = project(tmp_path, {"Dockerfile": REDIS_DOCKERFILE, "docker-entrypoint.sh": REDIS_ENTRYPOINT,
                             "gosu": GOSU, "redis-7.2.4.tar.gz": source}, executable=("docker-entrypoint.sh",))
    sha = hashlib.sha256(source).hexdigest()
    out = build(root, ctx, "redis:rw", "--build-arg", f"REDIS_DOWNLOAD_SHA={sha}")
    assert "usr/src/redis.tar.gz: OK" in out and "Redis server v=7.2.4" in out
    served = run(root, "redis:rw").stdout
    assert served == "Ready to accept connections tcp as redis in /data (umask 0077) args: \n"
    assert run(root, "redis:rw", "--port", "7000").stdout.endswith("args: --port 7000\n")  # `set -- redis-server "$@"`
    assert run(root, "redis:rw", "stat", "-c", "%U %a", "/data").stdout == "redis 755\n"
    config = inspect(root, "redis:rw")["Config"]
    assert config["Volumes"] == {"/data": {}} and config["WorkingDir"] == "/data"
    assert "REDIS_VERSION=7.2.4" in config["Env"] and not any("DOWNLOAD_SHA" in e for e in config["Env"])
    bad = lamina(root, "build", "-t", "redis:bad", "--build-arg", "REDIS_DOWNLOAD_SHA=" + "0" * 64, str(ctx),
                 check=False)
    assert bad.returncode == 1 and "FAILED" in bad.stdout + bad.stderr


# postgres -----------------------------------------------------------------------------------

POSTGRES_DOCKERFILE = """\
FROM alpine:local

# 70 is the standard uid/gid for "postgres" in Alpine
RUN set -eux; \\
	echo 'postgres:x:70:70::/var/lib/postgresql:/bin/sh' >> /etc/passwd; \\
	echo 'postgres:x:70:' >> /etc/group; \\
	mkdir -p /var/lib/postgresql; \\
	chown -R postgres:postgres /var/lib/postgresql

COPY --chmod=755 gosu /usr/local/bin/gosu

# make the "en_US.UTF-8" locale so postgres will be utf-8 enabled by default
ENV LANG=en_US.utf8

RUN mkdir /docker-entrypoint-initdb.d

ENV PG_MAJOR=16
ENV PG_VERSION=16.1
ENV PATH=$PATH:/usr/lib/postgresql/$PG_MAJOR/bin
COPY --chmod=755 bin/ /usr/lib/postgresql/$PG_MAJOR/bin/

RUN mkdir -p /var/run/postgresql && chown -R postgres:postgres /var/run/postgresql && chmod 3777 /var/run/postgresql

ENV PGDATA=/var/lib/postgresql/data
# this 1777 will be replaced by 0700 at runtime (allows semi-arbitrary "--user" values)
RUN mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" && chmod 1777 "$PGDATA"
VOLUME /var/lib/postgresql/data

COPY docker-entrypoint.sh docker-ensure-initdb.sh /usr/local/bin/
RUN ln -s docker-ensure-initdb.sh /usr/local/bin/docker-enforce-initdb.sh
COPY initdb/ /docker-entrypoint-initdb.d/
ENTRYPOINT ["docker-entrypoint.sh"]

STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
"""

POSTGRES_ENTRYPOINT = """\
#!/bin/sh
set -eu

# usage: file_env VAR [DEFAULT]
#    ie: file_env 'XYZ_DB_PASSWORD' 'example'
# (will allow for "$XYZ_DB_PASSWORD_FILE" to fill in the value of
#  "$XYZ_DB_PASSWORD" from a file, especially for Docker's secrets feature)
file_env() {
	var="$1"; fileVar="${var}_FILE"; def="${2:-}"
	val="$def"
	eval "v=\\${$var:-}; fv=\\${$fileVar:-}"
	if [ -n "$v" ]; then val="$v"; elif [ -n "$fv" ]; then val="$(cat "$fv")"; fi
	export "$var"="$val"
	unset "$fileVar"
}

docker_create_db_directories() {
	mkdir -p "$PGDATA"
	chmod 00700 "$PGDATA" || :
	if [ "$(id -u)" = '0' ]; then
		find "$PGDATA" \\! -user postgres -exec chown postgres '{}' +
	fi
}

docker_verify_minimum_env() {
	if [ -z "$POSTGRES_PASSWORD" ] && [ 'trust' != "${POSTGRES_HOST_AUTH_METHOD:-}" ]; then
		cat >&2 <<-'EOE'
			Error: Database is uninitialized and superuser password is not specified.
			You must specify POSTGRES_PASSWORD to a non-empty value for the
			superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
		EOE
		exit 1
	fi
}

docker_process_init_files() {
	echo
	for f; do
		case "$f" in
			*.sh)     echo "$0: running $f"; . "$f" ;;
			*.sql)    echo "$0: running $f"; psql -f "$f"; echo ;;
			*)        echo "$0: ignoring $f" ;;
		esac
	done
}

docker_setup_env() {
	file_env 'POSTGRES_PASSWORD'
	file_env 'POSTGRES_USER' 'postgres'
	file_env 'POSTGRES_DB' "$POSTGRES_USER"
	DATABASE_ALREADY_EXISTS=
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS='true'
	fi
}

_main() {
	# if first arg looks like a flag, assume we want to run postgres server
	if [ "${1#-}" != "$1" ]; then
		set -- postgres "$@"
	fi

	if [ "$1" = 'postgres' ]; then
		docker_setup_env
		# setup data directories and permissions (when run as root)
		docker_create_db_directories
		if [ "$(id -u)" = '0' ]; then
			# then restart script as postgres user
			exec gosu postgres "$0" "$@"
		fi

		# only run initialization on an empty data directory
		if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
			docker_verify_minimum_env
			initdb --username="$POSTGRES_USER"
			docker_process_init_files /docker-entrypoint-initdb.d/*
			echo
			echo 'PostgreSQL init process complete; ready for start up.'
			echo
		else
			echo
			echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
			echo
		fi
	fi

	exec "$@"
}

_main "$@"
"""

POSTGRES_BIN = {
    "bin/initdb": '#!/bin/sh\necho "The files belonging to this database system will be owned by user '
                  '\\"$(id -un)\\". ($*)"\necho "$PG_MAJOR" > "$PGDATA/PG_VERSION"\n',
    "bin/postgres": '#!/bin/sh\necho "$(id -un): database system is ready to accept connections (data: '
                    '$(cat "$PGDATA/PG_VERSION"), mode $(stat -c %a "$PGDATA"))"\n',
    "bin/psql": '#!/bin/sh\n[ "$1" = -f ] && sed "s/^/psql: /" "$2"\n',
}


def test_postgres_official_image_initdb_entrypoint(root: Path, tmp_path: Path) -> None:
    ctx = project(tmp_path, {"Dockerfile": POSTGRES_DOCKERFILE, "docker-entrypoint.sh": POSTGRES_ENTRYPOINT,
                             "docker-ensure-initdb.sh": "#!/bin/sh\nexec docker-entrypoint.sh true\n",
                             "gosu": GOSU, "initdb/01-schema.sql": "CREATE TABLE t (id int);\n",
                             "initdb/02-extra.sh": 'echo "extra init for $POSTGRES_DB"\n',
                             "initdb/README": "not run\n", **POSTGRES_BIN},
                  executable=("docker-entrypoint.sh", "docker-ensure-initdb.sh"))
    build(root, ctx, "postgres:rw")
    refused = run(root, "postgres:rw", check=False)
    assert refused.returncode == 1
    assert "Error: Database is uninitialized and superuser password is not specified." in refused.stdout + refused.stderr
    out = run(root, "-e", "POSTGRES_PASSWORD=secret", "-e", "POSTGRES_DB=shop", "postgres:rw").stdout
    assert 'will be owned by user "postgres". (--username=postgres)' in out
    assert "/usr/local/bin/docker-entrypoint.sh: running /docker-entrypoint-initdb.d/01-schema.sql" in out
    assert "psql: CREATE TABLE t (id int);" in out and "extra init for shop" in out
    assert "ignoring /docker-entrypoint-initdb.d/README" in out
    assert out.rstrip().endswith("postgres: database system is ready to accept connections (data: 16, mode 700)")
    assert run(root, "postgres:rw", "readlink", "/usr/local/bin/docker-enforce-initdb.sh").stdout == \
        "docker-ensure-initdb.sh\n"
    config = inspect(root, "postgres:rw")["Config"]
    assert config["StopSignal"] == "SIGINT" and config["Volumes"] == {"/var/lib/postgresql/data": {}}
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/16/bin" \
        in config["Env"]


# Python app with wheels built in a builder stage ---------------------------------------------

PYTHON_DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG PYTHON_VERSION=3.12

FROM alpine:local AS python-base
ARG PYTHON_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PYTHON_VERSION=${PYTHON_VERSION}
COPY --chmod=755 tools/pip tools/python /usr/local/bin/
RUN mkdir -p /usr/local/lib/python${PYTHON_VERSION}/site-packages

FROM python-base AS builder
WORKDIR /build
COPY requirements.txt .
RUN --mount=type=cache,target=/root/.cache/pip \\
    pip wheel --wheel-dir /wheels -r requirements.txt

FROM python-base AS runtime
# Create a non-privileged user that the app will run under.
ARG UID=10001
RUN echo "appuser:x:${UID}:${UID}::/nonexistent:/sbin/nologin" >> /etc/passwd \\
    && echo "appuser:x:${UID}:" >> /etc/group
COPY --from=builder /wheels /wheels
RUN pip install --no-index --find-links=/wheels /wheels/*.whl \\
    && rm -rf /wheels
WORKDIR /app
COPY --chown=appuser:appuser src/ ./
USER appuser
EXPOSE 8000
CMD ["python", "-m", "app"]
"""

PIP = """\
#!/bin/sh
# pip's part of the job: `wheel` builds (or reuses from ~/.cache/pip) one wheel per requirement, `install` unpacks them
set -e
cmd=$1; shift
site=/usr/local/lib/python$PYTHON_VERSION/site-packages
case "$cmd" in
wheel)
    [ "$1" = --wheel-dir ] && dir=$2 && shift 2
    [ "$1" = -r ] && req=$2
    mkdir -p "$dir" "$HOME/.cache/pip"
    grep -v '^#' "$req" | while IFS='=' read -r name _ version; do
        whl="$name-$version-py3-none-any.whl"
        if [ -f "$HOME/.cache/pip/$whl" ]; then
            echo "Using cached $whl"
        else
            echo "Building wheel for $name ($version)"
            echo "$name $version" > "$HOME/.cache/pip/$whl"
        fi
        cp "$HOME/.cache/pip/$whl" "$dir/"
    done ;;
install)
    for arg; do
        case "$arg" in *.whl) read -r name version < "$arg"; mkdir -p "$site/$name"
            echo "$version" > "$site/$name/VERSION"; installed="$installed $name-$version" ;; esac
    done
    echo "Successfully installed$installed" ;;
esac
"""

PYTHON = """\
#!/bin/sh
# `python -m mod` runs mod/__main__.sh from the working directory
[ "$1" = -m ] && exec sh "$2/__main__.sh"
"""


def test_python_app_with_wheels_from_a_builder_stage(root: Path, tmp_path: Path) -> None:
    app = ('site=/usr/local/lib/python$PYTHON_VERSION/site-packages\n'
           'echo "serving on :8000 as $(id -un) in $(pwd)"\n'
           'for p in "$site"/*; do echo "package $(basename "$p") $(cat "$p/VERSION")"; done\n')
    ctx = project(tmp_path, {"Dockerfile": PYTHON_DOCKERFILE, "tools/pip": PIP, "tools/python": PYTHON,
                             "requirements.txt": "# pinned\nflask==3.0.0\ngunicorn==21.2.0\n",
                             "src/app/__main__.sh": app})
    out = build(root, ctx, "pyapp:rw")
    assert "Building wheel for flask (3.0.0)" in out
    assert "Successfully installed flask-3.0.0 gunicorn-21.2.0" in out
    served = run(root, "pyapp:rw").stdout.splitlines()
    assert served == ["serving on :8000 as appuser in /app", "package flask 3.0.0", "package gunicorn 21.2.0"]
    assert run(root, "pyapp:rw", "ls", "/wheels", check=False).returncode != 0  # removed in the same layer
    (ctx / "requirements.txt").write_text("# pinned\nflask==3.0.0\ngunicorn==21.2.0\nrequests==2.31.0\n")
    out = lamina(root, "build", "--progress", "plain", "-t", "pyapp:rw", str(ctx)).stdout
    # the cache mount kept the wheels built before: only the new requirement is built
    assert "Using cached flask-3.0.0-py3-none-any.whl" in out and "Building wheel for requests (2.31.0)" in out
    assert "Building wheel for flask" not in out
    config = inspect(root, "pyapp:rw")["Config"]
    assert config["User"] == "appuser" and config["WorkingDir"] == "/app" and config["Cmd"] == ["python", "-m", "app"]
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PYTHON_VERSION=3.12"} <= set(config["Env"])


# Node app, npm ci layering ---------------------------------------------------------------------

NODE_DOCKERFILE = """\
# syntax=docker/dockerfile:1

ARG NODE_VERSION=20.11.0

FROM alpine:local AS base
ARG NODE_VERSION
ENV NODE_VERSION=${NODE_VERSION}
RUN echo 'node:x:1000:1000::/home/node:/bin/sh' >> /etc/passwd \\
    && echo 'node:x:1000:' >> /etc/group \\
    && mkdir -p /home/node && chown node:node /home/node
COPY --chmod=755 tools/node tools/npm /usr/local/bin/
WORKDIR /usr/src/app

# Download dependencies as a separate step to take advantage of Docker's caching.
FROM base AS deps
RUN --mount=type=bind,source=package.json,target=package.json \\
    --mount=type=bind,source=package-lock.json,target=package-lock.json \\
    --mount=type=cache,target=/root/.npm \\
    npm ci --omit=dev

FROM deps AS build
RUN --mount=type=bind,source=package.json,target=package.json \\
    --mount=type=bind,source=package-lock.json,target=package-lock.json \\
    --mount=type=cache,target=/root/.npm \\
    npm ci
COPY . .
RUN npm run build

FROM base AS final
ENV NODE_ENV=production
USER node
COPY package.json .
COPY --from=deps /usr/src/app/node_modules ./node_modules
COPY --from=build --chown=node:node /usr/src/app/dist ./dist
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD node dist/health.js
CMD ["node", "dist/server.js"]
"""

NPM = """\
#!/bin/sh
# npm's part of the job. package-lock.json here: one "name version [dev]" per line
set -e
case "$1" in
ci)
    rm -rf node_modules
    count=0
    while read -r name version kind; do
        [ "$kind" = dev ] && [ "$2" = --omit=dev ] && continue
        mkdir -p "node_modules/$name" "$HOME/.npm"
        echo "{\\"name\\":\\"$name\\",\\"version\\":\\"$version\\"}" > "node_modules/$name/package.json"
        touch "$HOME/.npm/$name-$version.tgz"
        count=$((count + 1))
    done < package-lock.json
    echo "added $count packages in 0.1s" ;;
run)
    [ "$2" = build ] || exit 1
    mkdir -p dist
    for f in src/*.js; do sed 's/^/  /' "$f" > "dist/$(basename "$f")"; done
    echo "built $(ls dist | wc -l) files" ;;
esac
"""

NODE = """\
#!/bin/sh
# node's part of the job: print what console.log would
echo "node v$NODE_VERSION ($NODE_ENV) as $(id -un): $1"
sed -n 's/.*console\\.log("\\(.*\\)");.*/\\1/p' "$1"
"""


def test_node_app_npm_ci_layering_and_dockerignore(root: Path, tmp_path: Path) -> None:
    ctx = project(tmp_path, {
        "Dockerfile": NODE_DOCKERFILE, "tools/npm": NPM, "tools/node": NODE,
        "package.json": '{"name": "web", "version": "1.0.0"}\n',
        "package-lock.json": "express 4.18.2\nleft-pad 1.3.0\njest 29.7.0 dev\n",
        "src/server.js": 'console.log("listening on 3000");\n',
        "src/health.js": 'console.log("ok");\n',
        ".dockerignore": "node_modules\n*.log\n.git\n",
        "npm-debug.log": "noise\n", "node_modules/stale/index.js": "stale\n",
    })
    out = build(root, ctx, "node:rw")
    assert "added 2 packages" in out and "added 3 packages" in out and "built 2 files" in out
    served = run(root, "node:rw").stdout
    assert served == "node v20.11.0 (production) as node: dist/server.js\nlistening on 3000\n"
    listing = run(root, "node:rw", "ls", "node_modules").stdout.split()
    assert listing == ["express", "left-pad"]  # the deps stage: no dev dependencies, nothing from the context
    assert run(root, "node:rw", "stat", "-c", "%U", "dist/server.js").stdout == "node\n"
    config = inspect(root, "node:rw")["Config"]
    health = config["Healthcheck"]
    assert health["Test"] == ["CMD-SHELL", "node dist/health.js"]
    assert (health["Interval"], health["Timeout"], health["StartPeriod"], health["Retries"]) == \
        (30_000_000_000, 5_000_000_000, 10_000_000_000, 3)
    assert config["ExposedPorts"] == {"3000/tcp": {}} and "NODE_ENV=production" in config["Env"]
    # a source change rebuilds from COPY . . on; the dependency steps stay cached
    (ctx / "src" / "server.js").write_text('console.log("listening on 3001");\n')
    (ctx / "npm-debug.log").write_text("ignored, changes nothing\n")
    again = lamina(root, "build", "--progress", "plain", "-t", "node:rw", str(ctx)).stdout
    assert "added" not in again and "built 2 files" in again
    assert run(root, "node:rw").stdout.endswith("listening on 3001\n")


# Go service FROM scratch -----------------------------------------------------------------------

GO_DOCKERFILE = """\
# syntax=docker/dockerfile:1
FROM --platform=$BUILDPLATFORM alpine:local AS build
ARG TARGETOS
ARG TARGETARCH
ENV GOPATH=/go
COPY --chmod=755 tools/go /usr/local/bin/go
WORKDIR /src
# cache the modules first: they change less often than the code
RUN --mount=type=cache,target=/go/pkg/mod \\
    --mount=type=bind,source=go.sum,target=go.sum \\
    --mount=type=bind,source=go.mod,target=go.mod \\
    go mod download -x
RUN --mount=type=cache,target=/go/pkg/mod \\
    --mount=type=cache,target=/root/.cache/go-build \\
    --mount=type=bind,target=. \\
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -ldflags="-s -w" -o /bin/httpd ./cmd/httpd
RUN echo 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' > /etc/passwd.scratch

FROM scratch AS final
COPY --from=build /etc/passwd.scratch /etc/passwd
COPY --from=build /bin/httpd /httpd
COPY static/ /www/
ENV APP_ENV=production
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/httpd", "-f", "-h", "/www"]
CMD ["-p", "8080"]
"""

# the Go toolchain's part of the job: this module's "httpd" links to a static web server (busybox's)
GO = """\
#!/bin/sh
set -e
case "$1" in
mod) echo "go: downloading $(grep -c . go.sum) modules"; mkdir -p /go/pkg/mod/cache; cp go.sum /go/pkg/mod/cache/ ;;
build)
    out=$(echo "$@" | sed 's/.*-o \\([^ ]*\\).*/\\1/')
    echo "go build for $GOOS/$GOARCH (CGO_ENABLED=$CGO_ENABLED) from $(ls cmd/httpd)"
    cp /bin/busybox "$out" ;;
esac
"""


def test_go_service_from_scratch(root: Path, tmp_path: Path) -> None:
    ctx = project(tmp_path, {"Dockerfile": GO_DOCKERFILE, "tools/go": GO,
                             "go.mod": "module example.com/httpd\n\ngo 1.22\n",
                             "go.sum": "github.com/a/b v1.0.0 h1:x\ngithub.com/c/d v2.0.0 h1:y\n",
                             "cmd/httpd/main.go": "package main\n\nfunc main() {}\n",
                             "static/index.html": "<h1>from scratch</h1>\n"})
    out = build(root, ctx, "goapp:rw")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    assert "go: downloading 2 modules" in out and f"go build for linux/{arch} (CGO_ENABLED=0) from main.go" in out
    image = inspect(root, "goapp:rw")
    assert len(image["RootFS"]["Layers"]) == 3  # scratch: only the COPY layers
    config = image["Config"]
    assert config["Entrypoint"] == ["/httpd", "-f", "-h", "/www"] and config["Cmd"] == ["-p", "8080"]
    assert config["User"] == "65534:65534" and "APP_ENV=production" in config["Env"]
    # run the service as a user would, fetch a page from the host, stop it with Ctrl-C
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "lamina", "--root", str(root), "run", "--rm", "goapp:rw",
                               "-p", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        page = _fetch(f"http://127.0.0.1:{port}/index.html", server)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
    assert page == b"<h1>from scratch</h1>\n"
    assert server.returncode == 130
    assert not any(p for runtime in ("runc", "crun") if (root / runtime).is_dir()
                   for p in (root / runtime).iterdir())  # the container was removed


def _fetch(url: str, process: subprocess.Popen[bytes]) -> bytes:
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bytes(response.read())
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no answer from {url}: {process.communicate()}") from None
            time.sleep(0.1)


# static site served by busybox httpd, with a healthcheck ---------------------------------------

SITE_DOCKERFILE = """\
FROM alpine:local AS builder
ARG SITE_TITLE="My Site"
ARG HUGO_ENV=production
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/tmp/hugo_cache \\
    sh ./build-site.sh "$SITE_TITLE" public

FROM alpine:local
RUN echo 'www-data:x:82:82:Linux User,,,:/home/www-data:/sbin/nologin' >> /etc/passwd \\
    && echo 'www-data:x:82:www-data' >> /etc/group
COPY --from=builder --chown=www-data:www-data /src/public /var/www/html
COPY <<EOF /etc/httpd.conf
.html:text/html
.css:text/css
EOF
ENV PORT=8080
USER www-data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s \\
  CMD wget -q -O /dev/null "http://127.0.0.1:$PORT/" || exit 1
CMD httpd -f -p "127.0.0.1:$PORT" -h /var/www/html -c /etc/httpd.conf
"""

SITE_BUILD = """\
#!/bin/sh
# the static site generator's part of the job: each content/*.md page becomes an HTML page
set -e
title=$1; out=$2
mkdir -p "$out"
for page in content/*.md; do
    name=$(basename "$page" .md)
    {
        echo "<html><head><title>$title</title></head><body>"
        sed -e 's|^# \\(.*\\)|<h1>\\1</h1>|' -e 's|^\\([^<].*\\)|<p>\\1</p>|' "$page"
        echo "</body></html>"
    } > "$out/$name.html"
    echo "rendered $name.html"
done
cp static/* "$out/"
"""


def test_static_site_served_and_healthchecked(root: Path, tmp_path: Path) -> None:
    ctx = project(tmp_path, {"Dockerfile": SITE_DOCKERFILE, "build-site.sh": SITE_BUILD,
                             "content/index.md": "# Welcome\nHello from the site.\n",
                             "content/about.md": "# About\nUs.\n", "static/style.css": "body{}\n"})
    out = build(root, ctx, "site:rw", "--build-arg", "SITE_TITLE=Lamina Docs")
    assert "rendered index.html" in out and "rendered about.html" in out
    config = inspect(root, "site:rw")["Config"]
    assert config["Cmd"] == ["/bin/sh", "-c", 'httpd -f -p "127.0.0.1:$PORT" -h /var/www/html -c /etc/httpd.conf']
    health = config["Healthcheck"]
    assert health["Test"][0] == "CMD-SHELL" and health["Interval"] == 30_000_000_000
    port = _free_port()
    # start the server as CMD would (in the background), then run the healthcheck and fetch a page
    script = (f'httpd -p "127.0.0.1:$PORT" -h /var/www/html -c /etc/httpd.conf; sleep 0.3; '
              f'{health["Test"][1]} && echo healthy; wget -q -O - "http://127.0.0.1:$PORT/index.html"')
    served = run(root, "-e", f"PORT={port}", "site:rw", "sh", "-c", script).stdout
    assert served.startswith("healthy\n<html><head><title>Lamina Docs</title></head><body>\n<h1>Welcome</h1>")
    assert "<p>Hello from the site.</p>" in served
    owner = run(root, "site:rw", "stat", "-c", "%U:%G %n", "/var/www/html/style.css").stdout
    assert owner == "www-data:www-data /var/www/html/style.css\n"
    assert run(root, "site:rw", "cat", "/etc/httpd.conf").stdout == ".html:text/html\n.css:text/css\n"


# a healthchecked worker written with heredocs ------------------------------------------------

WORKER_DOCKERFILE = """\
# syntax=docker/dockerfile:1.7
# escape=\\
ARG VERSION=2.4.1
FROM alpine:local
ARG VERSION
LABEL org.opencontainers.image.title="worker" \\
      org.opencontainers.image.version="${VERSION}" \\
      org.opencontainers.image.source="https://example.com/worker"
SHELL ["/bin/sh", "-eo", "pipefail", "-c"]

RUN <<EOF
set -eu
echo 'worker:x:1001:1001::/var/lib/worker:/sbin/nologin' >> /etc/passwd
echo 'worker:x:1001:' >> /etc/group
mkdir -p /var/lib/worker /etc/worker
chown worker:worker /var/lib/worker
EOF

COPY <<-"EOT" /etc/worker/worker.conf
	# settings are read at start; $HOME is not expanded here
	queue=jobs
	concurrency=4
	version=${VERSION}
EOT

COPY --chmod=755 <<EOF /usr/local/bin/worker
#!/bin/sh
set -e
. /etc/worker/worker.conf 2>/dev/null || true
echo "worker ${VERSION} starting: queue=\\$queue concurrency=\\$concurrency"
for job in "\\$@"; do echo "done: \\$job"; done
EOF

COPY --chmod=755 <<'EOF' /usr/local/bin/docker-entrypoint.sh
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then set -- worker "$@"; fi
echo "entrypoint: running $1 as $(id -un)"
exec "$@"
EOF

RUN cat /etc/worker/worker.conf | grep -c = | tee /etc/worker/settings.count

WORKDIR /var/lib/worker
USER worker
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=2s --start-period=5s --start-interval=1s --retries=5 \\
    CMD ["sh", "-c", "test -f /etc/worker/worker.conf"]
ONBUILD COPY jobs/ /var/lib/worker/jobs/
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["worker", "report", "cleanup"]
"""


def test_worker_with_heredocs_shell_and_healthcheck(root: Path, tmp_path: Path) -> None:
    ctx = project(tmp_path / "worker", {"Dockerfile": WORKER_DOCKERFILE})
    out = build(root, ctx, "worker:rw", "--build-arg", "VERSION=2.5.0")
    assert "\n3\n" in out  # `grep -c =` through `tee`, under pipefail
    served = run(root, "worker:rw").stdout
    assert served == ("entrypoint: running worker as worker\nworker 2.5.0 starting: queue=jobs concurrency=4\n"
                      "done: report\ndone: cleanup\n")
    assert run(root, "worker:rw", "--concurrency").stdout.startswith("entrypoint: running worker")
    conf = run(root, "worker:rw", "cat", "/etc/worker/worker.conf").stdout
    assert conf == ("entrypoint: running cat as worker\n"  # quoted heredoc: no expansion; <<- strips the tabs
                    "# settings are read at start; $HOME is not expanded here\nqueue=jobs\nconcurrency=4\n"
                    "version=${VERSION}\n")
    config = inspect(root, "worker:rw")["Config"]
    assert config["Labels"]["org.opencontainers.image.version"] == "2.5.0"
    assert config["Shell"] == ["/bin/sh", "-eo", "pipefail", "-c"]
    assert config["Healthcheck"] == {"Test": ["CMD", "sh", "-c", "test -f /etc/worker/worker.conf"],
                                     "Interval": 15_000_000_000, "Timeout": 2_000_000_000,
                                     "StartPeriod": 5_000_000_000, "StartInterval": 1_000_000_000, "Retries": 5}
    assert config["OnBuild"] == ["COPY jobs/ /var/lib/worker/jobs/"] and config["User"] == "worker"
    # a child image runs the ONBUILD trigger
    child = project(tmp_path / "child", {"Dockerfile": "FROM worker:rw\n", "jobs/nightly": "run\n"})
    build(root, child, "worker:child")
    assert run(root, "worker:child", "ls", "/var/lib/worker/jobs").stdout.endswith("as worker\nnightly\n")


# the official alpine/debian images: a root filesystem tarball ADDed to scratch --------------------


def test_official_base_image_from_a_rootfs_tarball(root: Path, tmp_path: Path) -> None:
    import lzma

    rootfs = lzma.compress(busybox_rootfs_tar({"etc/os-release": b"NAME=Lamina Linux\nVERSION_ID=1.0\n"}))
    ctx = project(tmp_path, {"Dockerfile": 'FROM scratch\nADD rootfs.tar.xz /\nCMD ["/bin/sh"]\n',
                             "rootfs.tar.xz": rootfs})
    build(root, ctx, "base:rw")
    assert len(inspect(root, "base:rw")["RootFS"]["Layers"]) == 1
    assert run(root, "base:rw", "cat", "/etc/os-release").stdout == "NAME=Lamina Linux\nVERSION_ID=1.0\n"
    listing = run(root, "base:rw", "sh", "-c", "stat -c %a /tmp; ls /rootfs.tar.xz 2>&1", check=False).stdout
    assert listing == "1777\nls: /rootfs.tar.xz: No such file or directory\n"  # extracted, not copied
