package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SocketPolicy says who may use a unix socket: root always; members of Group when it is set.
type SocketPolicy struct {
	Group string
}

func (p SocketPolicy) gid() (int, error) {
	if p.Group == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(p.Group); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(p.Group)
	if err != nil {
		return -1, fmt.Errorf("socket group %q: %w", p.Group, err)
	}
	return strconv.Atoi(g.Gid)
}

// ListenUnix creates a unix socket at path that only root (and the policy's group) may connect to.
// It creates the directory, refuses a directory that others could tamper with (not owned by root,
// or writable by group or others without the sticky bit), and replaces a stale socket, but never a
// socket that another process still serves nor a file that is not a socket.
func ListenUnix(path string, policy SocketPolicy) (net.Listener, error) {
	gid, err := policy.gid()
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory %s: %w", dir, err)
	}
	if err := checkDirSafe(dir); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket path %s exists and is not a socket; refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s is served by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	// Create the socket with no access at all, then open it up: no window where others can connect.
	old := unix.Umask(0o777)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		if err := os.Chown(path, 0, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("chown %s to group %s: %w", path, policy.Group, err)
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

func checkDirSafe(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("socket directory %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if int(st.Uid) != os.Geteuid() && st.Uid != 0 {
		return fmt.Errorf("socket directory %s is owned by uid %d, not by root: refusing to serve there", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("socket directory %s has mode %v: writable by others, refusing to serve there", dir, fi.Mode().Perm())
	}
	return nil
}

type peerKey struct{}

// PeerCred is the identity of the process at the other end of a unix socket connection.
type PeerCred struct {
	PID, UID, GID int
}

// withPeerCred is an http.Server ConnContext that records the peer's credentials (SO_PEERCRED).
func withPeerCred(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, PeerCred{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid)})
}

// errPeerDenied is returned to a peer the socket policy does not admit.
var errPeerDenied = errors.New("permission denied: only root or the configured socket group may use this socket")

// authorize checks the peer against the policy: the file mode already limits who can connect,
// this also stops a process that inherited a connected descriptor.
func (p SocketPolicy) authorize(ctx context.Context) error {
	cred, ok := ctx.Value(peerKey{}).(PeerCred)
	if !ok {
		return errPeerDenied
	}
	if cred.UID == 0 {
		return nil
	}
	gid, err := p.gid()
	if err != nil || gid < 0 {
		return errPeerDenied
	}
	if cred.GID == gid {
		return nil
	}
	groups, err := supplementaryGroups(cred.PID)
	if err == nil {
		for _, g := range groups {
			if g == gid {
				return nil
			}
		}
	}
	return errPeerDenied
}

// supplementaryGroups reads the Groups line of /proc/<pid>/status.
func supplementaryGroups(pid int) ([]int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, f := range strings.Fields(rest) {
				if n, err := strconv.Atoi(f); err == nil {
					out = append(out, n)
				}
			}
		}
	}
	return out, nil
}
