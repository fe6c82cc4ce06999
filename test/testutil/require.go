// Package testutil holds helpers shared by tests that need real components.
package testutil

import (
	"os"
	"testing"
)

// RequireAllEnv is set by `make test` and CI: a missing component is then a failure, not a skip.
const RequireAllEnv = "KURYR_REQUIRE_ALL"

// Require skips the test when cond is false, unless KURYR_REQUIRE_ALL=1, in which case it fails:
// on a laptop a missing neutron-server or kernel feature is fine, in CI it must be loud.
func Require(t testing.TB, cond bool, why string) {
	t.Helper()
	if cond {
		return
	}
	if os.Getenv(RequireAllEnv) == "1" {
		t.Fatalf("required component missing (%s=1): %s", RequireAllEnv, why)
	}
	t.Skipf("skipping: %s (set %s=1 to make this a failure)", why, RequireAllEnv)
}

// RequireRoot requires uid 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "test needs root")
}
