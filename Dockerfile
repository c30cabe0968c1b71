# One image for every component: `kameng operator`, `kameng storefront --mode hq|subsite`,
# `kameng risk run`, `kameng settlement`. For Docker users; `make image` builds the same
# contents without a Docker engine (hack/image: mmdebstrap + umoci), and its smoke test
# (tests/integration/test_image.py) runs them. Both: Debian bookworm's python3 (3.11),
# postgresql-client (pg_dump/pg_restore of the exit archives and database moves, as new as
# the servers' major version) and ca-certificates; /opt/kameng from image/install.sh with
# the wheels of image/requirements.lock (by hash) and the project's own; uid 10001, the
# restricted securityContext of the chart and of the storefront Deployments.
FROM python:3.11-slim-bookworm AS wheels
WORKDIR /src
COPY image/requirements.lock /tmp/wheels/requirements.lock
RUN pip download --no-cache-dir --require-hashes --no-deps --only-binary=:all: \
      -r /tmp/wheels/requirements.lock -d /tmp/wheels
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY storefront ./storefront
RUN pip wheel --no-cache-dir --no-deps -w /tmp/wheels .

FROM debian:bookworm-slim
COPY image/debian-packages /tmp/debian-packages
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends $(grep -v '^#' /tmp/debian-packages) \
    && rm -rf /var/lib/apt/lists/* /tmp/debian-packages
COPY --from=wheels /tmp/wheels /tmp/wheels
COPY image/install.sh /tmp/wheels/install.sh
RUN sh -eu /tmp/wheels/install.sh && rm -rf /tmp/wheels
ENV PATH=/opt/kameng/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["/opt/kameng/bin/kameng"]
CMD ["operator", "--standalone"]
