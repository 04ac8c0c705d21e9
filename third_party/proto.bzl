"""Protobuf and gRPC C++ code generation with Debian's protoc and grpc_cpp_plugin.

Bazel's native proto rules would fetch @com_google_protobuf, which cannot be
downloaded here, so a genrule runs the system tools instead.
"""

def weir_proto_library(name, srcs, grpc = False, deps = [], visibility = None):
    """Generates C++ for `srcs` (paths relative to //proto) and wraps it in a cc_library.

    Args:
      name: the cc_library name.
      srcs: .proto files below this package, which is the import root.
      grpc: also generate gRPC service stubs.
      deps: other weir_proto_library targets these protos import.
      visibility: the cc_library visibility.
    """
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]

    # The package directory is the proto root: imports and generated includes
    # read "weir/v1/x.proto" / "weir/v1/x.pb.h".
    pkg = native.package_name()
    out = "$(GENDIR)/" + pkg
    cmd = "protoc -I%s --cpp_out=%s " % (pkg, out)
    if grpc:
        cmd += "--grpc_out=%s --plugin=protoc-gen-grpc=$$(which grpc_cpp_plugin) " % out
    cmd += " ".join(["%s/%s" % (pkg, s) for s in srcs])

    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = outs,
        cmd = cmd,
    )
    native.filegroup(
        name = name + "_srcs",
        srcs = srcs,
        visibility = ["//visibility:public"],
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        strip_include_prefix = "/" + pkg,
        deps = deps + ["@system//:grpc" if grpc else "@system//:protobuf"],
        visibility = visibility,
    )
