package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Report prints a suite's figures line where make test's log keeps it (go test without -v drops
// t.Log of passing tests), in the test's own log, and appends it to reliability-figures.txt under
// $KURYR_STATE_DIR.
func Report(t testing.TB, line string) {
	t.Helper()
	t.Log(line)
	fmt.Println(line)
	if dir := os.Getenv("KURYR_STATE_DIR"); dir != "" {
		f, err := os.OpenFile(filepath.Join(dir, "reliability-figures.txt"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339), line)
			f.Close()
		}
	}
}
