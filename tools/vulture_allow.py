"""What vulture (``make deadcode``) reports but is used: each name with who uses it.

Not imported by anything; vulture reads it as one more source in which these names are used.
A name that becomes really unused should leave this file too.
"""

# ruff: noqa: B018, F821
_ = None

# Called by a framework, not by our code.
_.service  # grpc.GenericRpcHandler API: grpc calls it
exc_type  # __exit__(exc_type, exc, tb): the protocol's signature
tb  # __exit__(exc_type, exc, tb)
pytest_runtest_protocol  # tests/conftest.py: a pytest hook
pytest_runtest_makereport  # tests/conftest.py: a pytest hook
pytest_configure  # tests/conftest.py: a pytest hook (the conformance marker and switch)
pytest_runtest_setup  # tests/conftest.py: a pytest hook (absent conformance vectors)
nextitem  # the pytest hook's signature
_.longrepr  # pytest reads a report's longrepr
pytestmark  # pytest reads a module's marks
contained  # tests/test_cli_inputs.py: a fixture, used by name in usefixtures
no_server  # tests/test_pg_support.py: a fixture, used by name in usefixtures
recognitions_before  # gateway/runtime/retention.py PurgeStore: a protocol's parameter
conversions_before  # gateway/runtime/retention.py PurgeStore: a protocol's parameter
params  # keys/store/dbapi.py Connection.execute: a protocol's parameter

# Used by keys/store*, which vulture skips while it is split (w-store owns it).
KeyIdReusedError  # raised by the store (keys/store)
BatchConflictError  # raised by the store (keys/store)
created_at  # record fields the store writes and reads
started_at
updated_at
expected_version
expected_generation

# Not ours to delete now: tell the owner.
Background  # gateway/runtime/tasks.py: w-rooms' one background helper, being adopted
BYTES_ID_REGIONS  # tests/independent/doc_issuer.py (w-docs): documents partners.md §5
_.log_message  # gateway/grpc/server.py: http.server calls it for every request (scrapes not logged)
_.daemon_threads  # socketserver.ThreadingMixIn reads it
