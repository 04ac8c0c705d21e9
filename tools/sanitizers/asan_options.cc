// Runtime defaults of AddressSanitizer (with UBSan and LeakSanitizer) for
// --config=asan. Read by the runtimes at start-up; the ASAN_OPTIONS,
// UBSAN_OPTIONS and LSAN_OPTIONS environment variables still override them.
//
// weir_server children of the end-to-end tests are built the same way and
// find the same defaults, so a report in the server ends the server and
// fails the test that was talking to it.
extern "C" const char* __asan_default_options() {
  return "detect_leaks=1:check_initialization_order=1:strict_init_order=1:"
         "detect_odr_violation=2";
}
