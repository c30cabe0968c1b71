# Installs Kameng into the image's root (run there, as root, by hack/image inside its
# chroot and by the Dockerfile): one venv, /opt/kameng, with the wheels in /tmp/wheels,
# offline: the locked dependencies by hash (image/requirements.lock), then the project's
# own. The same script for both builds, so both images hold the same files.
set -eu
python3 -m venv --without-pip /opt/kameng
pip=$(ls /tmp/wheels/pip-*.whl)
/opt/kameng/bin/python "$pip/pip" install --quiet --no-index --find-links /tmp/wheels \
  --no-cache-dir --require-hashes --no-deps -r /tmp/wheels/requirements.lock
/opt/kameng/bin/python "$pip/pip" install --quiet --no-index --no-cache-dir --no-deps \
  /tmp/wheels/kameng-*.whl
/opt/kameng/bin/python -m pip uninstall --quiet --yes pip
site=$(/opt/kameng/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Never imported by Kameng, half the image: the kubernetes client's asyncio copy (Kameng
# talks to the API server with its own client; kubernetes is used for kubeconfig loading
# and quantities) and the test suites some packages ship.
rm -rf "$site/kubernetes/aio" "$site/websocket/tests" "$site/certifi/tests"
# Compiled ahead: the root filesystem is read-only and every start would compile again.
# unchecked-hash: the .pyc files carry no timestamp (reproducible builds).
/opt/kameng/bin/python -m compileall -q -j0 --invalidation-mode unchecked-hash \
  /opt/kameng/lib >/dev/null
# The pods' uid/gid (the chart's and the storefront Deployments' securityContext).
grep -q '^kameng:' /etc/group || echo 'kameng:x:10001:' >> /etc/group
grep -q '^kameng:' /etc/passwd || \
  echo 'kameng:x:10001:10001:kameng:/nonexistent:/usr/sbin/nologin' >> /etc/passwd
