# The two commands of the README are `make demo` and `make test`; the rest are chores.
.PHONY: demo test unit mutation soak lint crds tools up down status test-down venv manifests image image-lock kind-up

demo:            ## everything on the embedded default: cluster, PostgreSQL, Redis, operator, sample sub-site
	hack/demo

test:            ## lint + CRD freshness + unit and integration tests on the tests' own dev environment
	hack/test

unit: venv       ## unit tests only (no servers)
	.venv/bin/pytest -q tests/unit

mutation:        ## mutation testing of the money, license, permission and status checks (unit tests; fails below 90 % killed)
	hack/mutation

soak:            ## the whole suite 3 times in a row with a CPU burner beside it (flake hunt)
	hack/soak --runs 3 --load 1

image:           ## the OCI image of every component, without a Docker engine (build/image/*.oci.tar, *.docker.tar)
	hack/image

kind-up:         ## Docker users: a kind cluster with the image, the chart, HQ, PostgreSQL, Redis and the samples (not run by CI)
	hack/kind-up

image-lock:      ## re-resolve image/requirements.lock (after a dependency change)
	hack/image-lock

lint: venv
	.venv/bin/ruff check .

crds: venv       ## regenerate crds/ from operator/api/
	.venv/bin/kameng crds

tools:           ## build the pinned control-plane binaries into ~/.cache/kameng
	hack/build-tools

up:              ## start the dev environment; use: eval "$$(hack/devenv up)"
	hack/devenv up

down:            ## stop the demo's dev environment
	hack/devenv down

test-down:       ## stop the tests' dev environment
	KAMENG_DEVENV_DIR="$$(hack/devenv test-dir)" hack/devenv down

status:
	hack/devenv status

venv:
	hack/venv

manifests:       ## render the chart into the kustomize base manifests/operator/
	hack/render-manifests
