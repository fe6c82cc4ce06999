// Package crashpoint is for the crash-consistency suite (test/crash) only: it kills the process
// with SIGKILL at a named point where the agent persists or changes state, as a power cut or the
// OOM killer would, so that the suite can prove recovery from exactly there.
//
// KURYR_CRASH_POINT=<name>[:<nth>], read once at start, makes the nth call of Hit(name) (the first
// by default) kill the process. Unset, Hit costs one comparison.
package crashpoint

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Env names the crash point of this process.
const Env = "KURYR_CRASH_POINT"

var (
	point string
	nth   int64 = 1
	hits  atomic.Int64
)

func init() {
	v := os.Getenv(Env)
	name, n, ok := strings.Cut(v, ":")
	if ok {
		i, err := strconv.ParseInt(n, 10, 64)
		if err != nil || i < 1 {
			return // a typo must not crash at a point nobody asked for
		}
		nth = i
	}
	point = name
}

// Hit kills the process if name is the configured point and this is its nth call.
func Hit(name string) {
	if point == "" || name != point || hits.Add(1) != nth {
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	for {
		time.Sleep(time.Second) // SIGKILL is on its way: never go on past the point
	}
}

// Func returns a func that calls Hit(name), or nil when no crash point is set (for hooks that
// take a func).
func Func(name string) func() {
	if point == "" {
		return nil
	}
	return func() { Hit(name) }
}
