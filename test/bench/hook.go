package main

import (
	"fmt"
	"os"
	"os/exec"
)

// runHook runs a shell command with BURST set, e.g. to fill the pool before a burst.
func runHook(command string, burst int) error {
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), fmt.Sprintf("BURST=%d", burst))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}
