package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// BinDirEnv names a directory holding prebuilt binaries (make test's race-built ones, bin/race).
const BinDirEnv = "KURYR_BIN_DIR"

// RunWithBinaries is a TestMain body for suites that start the real binaries: it sets *dir to
// $KURYR_BIN_DIR, or else builds the named commands (./cmd/<name>) into a temporary directory,
// runs m and returns its exit code.
func RunWithBinaries(m *testing.M, dir *string, cmds ...string) int {
	if d := os.Getenv(BinDirEnv); d != "" {
		*dir = d
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "kuryr-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-o", tmp + "/"}
	for _, c := range cmds {
		args = append(args, "github.com/kuryr-pools/kuryr/cmd/"+c)
	}
	build := exec.Command("go", args...)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build %v: %v\n%s", cmds, err, out)
		return 1
	}
	*dir = tmp
	return m.Run()
}
