// Package version holds the build version, stamped at link time with
// -ldflags "-X github.com/kuryr-pools/kuryr/version.Version=...".
package version

import (
	"fmt"
	"runtime"
)

// Version is overridden by the linker; "dev" marks an unstamped build.
var Version = "dev"

// String is what every binary prints for --version.
func String(binary string) string {
	return fmt.Sprintf("%s %s (%s, %s/%s)", binary, Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// UserAgent names the project and version in requests to Neutron and Kubernetes.
func UserAgent(binary string) string {
	return fmt.Sprintf("kuryr-pools/%s (%s)", Version, binary)
}
