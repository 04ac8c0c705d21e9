// The end-to-end fixture of the client library's suites: E2ETest's server
// and helpers, and a weir::Client on that server for each test.
#ifndef WEIR_TESTS_CLIENT_FIXTURE_H_
#define WEIR_TESTS_CLIENT_FIXTURE_H_

#include <memory>

#include "client/client.h"
#include "tests/e2e_fixture.h"

namespace weir::test {

class ClientLibraryTest : public E2ETest {
 protected:
  void SetUp() override {
    E2ETest::SetUp();
    if (HasFatalFailure()) return;
    weir_ = std::make_unique<Client>(server().Channel());
  }

  // The test's client. Only valid once SetUp succeeded.
  Client& weir() { return *weir_; }

 private:
  std::unique_ptr<Client> weir_;
};

}  // namespace weir::test

#endif  // WEIR_TESTS_CLIENT_FIXTURE_H_
