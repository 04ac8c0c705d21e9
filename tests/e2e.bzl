"""The end-to-end test rule: a cc_test that starts the real weir_server."""

load("@rules_cc//cc:defs.bzl", "cc_test")

# What every end-to-end test links: the server launcher, the API and the
# libraries they are written with.
_E2E_DEPS = [
    ":server_process",
    "//proto:weir_cc_proto",
    "@system//:absl",
    "@system//:grpc",
    "@system//:gtest",
    "@system//:gtest_main",
]

def weir_e2e_test(name, srcs, deps = [], size = "medium", **kwargs):
    """A cc_test with weir_server as data and the common deps.

    Args:
      name: the test's name.
      srcs: its sources.
      deps: what it needs beyond the common deps (the fixture, the client).
      size: the test size; medium unless given.
      **kwargs: passed to cc_test (timeout, tags, ...).
    """
    cc_test(
        name = name,
        size = size,
        srcs = srcs,
        data = ["//rpc:weir_server"],
        deps = deps + [d for d in _E2E_DEPS if d not in deps],
        **kwargs
    )
