package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
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
//
// Go starts a child with vfork (CLONE_VM), so the kernel counts the parent's memory high-water mark
// in the child's ru_maxrss: a plugin started by this process would "use" all of its memory. With
// timeBin (GNU time, which fork()s from its own small image) the peak is the plugin's own, but wall
// time and CPU then include time's own start (about 10 ms here): use it for the peak alone.
type rusageExec struct {
	raw     invoke.RawExec
	dec     version.PluginDecoder
	timeBin string
	mu      sync.Mutex
	log     []execUsage
}

func (e *rusageExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, pluginPath)
	var rssFile string
	if e.timeBin != "" {
		f, err := os.CreateTemp("", "bench-rss-")
		if err != nil {
			return nil, err
		}
		f.Close()
		rssFile = f.Name()
		defer os.Remove(rssFile)
		c = exec.CommandContext(ctx, e.timeBin, "-f", "%M", "-o", rssFile, pluginPath)
	}
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdinData), &stdout, &stderr
	start := time.Now()
	err := c.Run()
	wall := time.Since(start)
	if c.ProcessState != nil {
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
			u := execUsage{Command: envValue(environ, "CNI_COMMAND"), Wall: wall, PluginPath: pluginPath,
				User: time.Duration(ru.Utime.Nano()), Sys: time.Duration(ru.Stime.Nano()), MaxRSSKiB: ru.Maxrss}
			if rssFile != "" {
				u.MaxRSSKiB = peakFromTime(rssFile)
			}
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

// peakFromTime reads GNU time's -f %M output (KiB; after a "Command exited with non-zero status"
// line when the plugin failed); -1 when it is not there.
func peakFromTime(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	lines := strings.Fields(strings.TrimSpace(string(data)))
	if len(lines) == 0 {
		return -1
	}
	n, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		return -1
	}
	return n
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
