package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// TestRequireFailsWhenRequired runs a child test process with KURYR_REQUIRE_ALL=1 and checks that
// a missing component fails it instead of skipping it.
func TestRequireFailsWhenRequired(t *testing.T) {
	if os.Getenv("KURYR_TESTUTIL_CHILD") == "1" {
		Require(t, false, "component deliberately missing")
		return
	}
	for _, tc := range []struct {
		requireAll string
		wantFail   bool
	}{{"1", true}, {"", false}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireFailsWhenRequired$")
		cmd.Env = append(os.Environ(), "KURYR_TESTUTIL_CHILD=1", RequireAllEnv+"="+tc.requireAll)
		err := cmd.Run()
		if failed := err != nil; failed != tc.wantFail {
			t.Errorf("%s=%q: child failed=%v, want %v", RequireAllEnv, tc.requireAll, failed, tc.wantFail)
		}
	}
}
