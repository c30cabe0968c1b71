# One image for every component: `kameng operator`, `kameng storefront --mode hq|subsite`.
# Built by CI where a Docker engine exists (not on the dev machines); the uid matches the
# restricted securityContext of the chart and of the storefront Deployments (10001).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY storefront ./storefront
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# pg_dump/pg_restore: the exit archives and moving a site's database to another PostgreSQL
# server (docs/runbooks.md); they must be as new as the servers' major version.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 kameng && useradd --uid 10001 --gid 10001 --no-create-home kameng
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["kameng"]
CMD ["operator", "--standalone"]
