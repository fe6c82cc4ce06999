package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// execUsage is what one plugin execution cost: wall time, CPU, and peak resident memory, from the
// child's rusage (what `/usr/bin/time -v` reports).
type execUsage struct {
	Command    string
	Wall       time.Duration
	User, Sys  time.Duration
	MaxRSSKiB  int64
	PluginPath string
}

// rusageExec runs plugins as libcni's RawExec does and records the rusage of each ADD and DEL.
type rusageExec struct {
	raw invoke.RawExec
	dec version.PluginDecoder
	mu  sync.Mutex
	log []execUsage
}

func (e *rusageExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, pluginPath)
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdinData), &stdout, &stderr
	start := time.Now()
	err := c.Run()
	wall := time.Since(start)
	if c.ProcessState != nil {
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
			u := execUsage{Command: envValue(environ, "CNI_COMMAND"), Wall: wall, PluginPath: pluginPath,
				User: time.Duration(ru.Utime.Nano()), Sys: time.Duration(ru.Stime.Nano()), MaxRSSKiB: ru.Maxrss}
			e.mu.Lock()
			e.log = append(e.log, u)
			e.mu.Unlock()
		}
	}
	if err != nil {
		msg := types.Error{Code: types.ErrInternal}
		if stdout.Len() == 0 || json.Unmarshal(stdout.Bytes(), &msg) != nil {
			msg.Msg = fmt.Sprintf("netplugin failed: %q: %v", stderr.String(), err)
		}
		return nil, &msg
	}
	return stdout.Bytes(), nil
}

func (e *rusageExec) FindInPath(plugin string, paths []string) (string, error) {
	return e.raw.FindInPath(plugin, paths)
}

func (e *rusageExec) Decode(jsonBytes []byte) (version.PluginInfo, error) {
	return e.dec.Decode(jsonBytes)
}

// take returns the executions of command recorded so far and forgets them.
func (e *rusageExec) take(command string) []execUsage {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out, rest []execUsage
	for _, u := range e.log {
		if u.Command == command {
			out = append(out, u)
		} else {
			rest = append(rest, u)
		}
	}
	e.log = rest
	return out
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
