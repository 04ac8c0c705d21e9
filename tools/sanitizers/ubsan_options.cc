// Runtime defaults of UndefinedBehaviorSanitizer for --config=ubsan (and the
// UBSan half of --config=asan). Read by the runtime at start-up; the
// UBSAN_OPTIONS environment variable still overrides them.
//
// The code is built with -fno-sanitize-recover=all, so the first report ends
// the process; printing the stack says where.
extern "C" const char* __ubsan_default_options() {
  return "print_stacktrace=1:halt_on_error=1";
}
