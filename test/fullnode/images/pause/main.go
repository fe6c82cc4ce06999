// pause is the pod sandbox image's entrypoint for the full-node tests: it holds the pod's
// namespaces, reaps the children it inherits and exits on SIGTERM or SIGINT. It is built static and
// packed by mkoci, so the node never contacts a registry for its sandbox image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	// PID 1 of a PID namespace gets no default signal action: without handlers SIGTERM is ignored.
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
