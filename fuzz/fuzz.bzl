"""weir_fuzz_test: a libFuzzer target and the test that runs it.

Under --config=fuzz (clang, libFuzzer, ASan+UBSan) `name` is a libFuzzer
binary and `name + "_test"` fuzzes it for a few seconds, starting from the
seed corpus. In every other build `name` links fuzz/replay_main.cc instead of
libFuzzer and the test replays the seed corpus, so the corpus (including every
reproducer added to it) is a regression test under plain, ASan and TSan
builds too.
"""

load("@rules_cc//cc:defs.bzl", "cc_binary")

def weir_fuzz_test(name, srcs, deps, corpus, seconds = 20, size = "medium"):
    cc_binary(
        name = name,
        testonly = True,
        srcs = srcs,
        linkopts = select({
            "//fuzz:fuzzing": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        deps = deps + select({
            "//fuzz:fuzzing": [],
            "//conditions:default": ["//fuzz:replay_main"],
        }),
    )
    native.sh_test(
        name = name + "_test",
        size = size,
        srcs = ["//fuzz:run_fuzzer.sh"],
        args = [
            "$(rootpath :%s)" % name,
            "fuzz/" + corpus,
            str(seconds),
        ],
        data = [":" + name] + native.glob([corpus + "/**"]),
    )
