"""The exit: a site's data exported, encrypted for HQ, stored, and restorable.

``envelope`` (encryption for HQ's X25519 key), ``manifest`` (what an archive holds and
its checksums), ``archive`` (the plain tar of files), ``store`` (filesystem and S3
targets), ``export`` and ``restore`` (the runners), ``keys`` (HQ's export key pair).
"""
