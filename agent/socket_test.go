package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/pool"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// peerSocketEnv turns the test binary into a socket client (TestPeerHelper): it sends one request
// (peerRequestEnv: "METHOD PATH BODY") to the socket and prints "dial: <error>" or
// "status <code>" and the body.
const (
	peerSocketEnv  = "KURYR_TEST_PEER_SOCKET"
	peerRequestEnv = "KURYR_TEST_PEER_REQUEST"
)

// TestPeerHelper is the client of TestSocketsRefuseOtherUsers, run as another user; on its own it
// does nothing.
func TestPeerHelper(t *testing.T) {
	sock := os.Getenv(peerSocketEnv)
	if sock == "" {
		return
	}
	method, rest, _ := strings.Cut(os.Getenv(peerRequestEnv), " ")
	path, body, _ := strings.Cut(rest, " ")
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Printf("dial: %v\n", err)
		os.Exit(0)
	}
	req, _ := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	if err := req.Write(c); err != nil {
		fmt.Printf("write: %v\n", err)
		os.Exit(0)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		fmt.Printf("read: %v\n", err)
		os.Exit(0)
	}
	out, _ := io.ReadAll(resp.Body)
	fmt.Printf("status %d\n%s\n", resp.StatusCode, out)
	os.Exit(0)
}

// peer runs the test binary as uid/gid (and supplementary groups) against sock.
type peer struct {
	t   *testing.T
	exe string
}

// newPeer copies the test binary where any user can run it: the build directory is root's only.
func newPeer(t *testing.T) *peer {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := worldDir(t)
	exe := filepath.Join(dir, "agent.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return &peer{t: t, exe: exe}
}

// worldDir is a root-owned directory that everyone may enter but only root may write.
func worldDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "kuryr-socket-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (p *peer) call(sock string, cred *syscall.Credential, request string) string {
	p.t.Helper()
	cmd := exec.Command(p.exe, "-test.run=^TestPeerHelper$")
	cmd.Env = append(os.Environ(), peerSocketEnv+"="+sock, peerRequestEnv+"="+request)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("peer %+v: %v\n%s", cred, err, out)
	}
	return string(out)
}

// TestSocketsRefuseOtherUsers runs real clients as other users against the management and CNI
// sockets: the file mode keeps out everyone but root and the socket group, and when the mode is
// loosened anyway the management socket still refuses a peer whose credentials (SO_PEERCRED) are
// neither root's nor the group's, without touching the pools.
func TestSocketsRefuseOtherUsers(t *testing.T) {
	testutil.RequireRoot(t)
	const group = 4243 // a gid no user has
	p := newPeer(t)
	nobody := func(gid uint32, groups ...uint32) *syscall.Credential {
		return &syscall.Credential{Uid: 65534, Gid: gid, Groups: groups}
	}
	root := &syscall.Credential{Uid: 0, Gid: 0}
	const free = "POST " + manage.PathFree + " {}"

	admin := &fakeAdmin{node: "10.0.4.6", pools: map[pool.Key][]pool.Port{defaultKey: {{ID: "port-a"}}}}
	serveManage := func(policy SocketPolicy) string {
		sock := filepath.Join(worldDir(t), "run", "kuryr_manage.sock")
		m := &ManageServer{Admin: admin, Policy: policy, DefaultPool: func(context.Context) (pool.Key, error) { return defaultKey, nil }}
		serveOn(t, sock, policy, m.Handler(context.Background()))
		return sock
	}
	frees := func() int {
		admin.mu.Lock()
		defer admin.mu.Unlock()
		return len(admin.freed)
	}

	defSock := serveManage(SocketPolicy{})
	grpSock := serveManage(SocketPolicy{Group: fmt.Sprint(group)})
	for sock, wantMode := range map[string]os.FileMode{defSock: 0o600, grpSock: 0o660} {
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		wantGID := uint32(0)
		if sock == grpSock {
			wantGID = group
		}
		if fi.Mode().Perm() != wantMode || st.Uid != 0 || st.Gid != wantGID {
			t.Errorf("%s: mode %v owner %d:%d, want %v 0:%d", sock, fi.Mode().Perm(), st.Uid, st.Gid, wantMode, wantGID)
		}
	}

	for _, tc := range []struct {
		name    string
		sock    string
		loosen  bool // chmod 0666 first, as a careless operator might
		cred    *syscall.Credential
		want    string
		reaches bool
	}{
		{"root, default policy", defSock, false, root, "status 200", true},
		{"nobody, default policy", defSock, false, nobody(65534), "dial: ", false},
		{"nobody in the socket group", grpSock, false, nobody(group), "status 200", true},
		{"nobody with the socket group as a supplementary group", grpSock, false, nobody(65534, group), "status 200", true},
		{"nobody outside the socket group", grpSock, false, nobody(65534), "dial: ", false},
		{"nobody, default policy, mode loosened", defSock, true, nobody(65534), "status 403", false},
		{"nobody outside the group, mode loosened", grpSock, true, nobody(65534, 65533), "status 403", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.loosen {
				if err := os.Chmod(tc.sock, 0o666); err != nil {
					t.Fatal(err)
				}
			}
			before := frees()
			out := p.call(tc.sock, tc.cred, free)
			if !strings.HasPrefix(out, tc.want) {
				t.Fatalf("freePool as %+v: %q, want %q", tc.cred, out, tc.want)
			}
			if tc.want == "dial: " && !strings.Contains(out, "permission denied") {
				t.Errorf("connect as %+v: %q, want permission denied", tc.cred, out)
			}
			if tc.want == "status 403" && !strings.Contains(out, "only root or the configured socket group") {
				t.Errorf("refusal %q does not say who may use the socket", out)
			}
			if got := frees() - before; (got > 0) != tc.reaches {
				t.Errorf("freePool as %+v reached the pools %d times, want reached=%v", tc.cred, got, tc.reaches)
			}
		})
	}

	// The CNI socket is root's only by default too.
	f := newFixture(t, true, testPort("port-1", 7))
	cniSock := filepath.Join(worldDir(t), "run", "cni.sock")
	serveOn(t, cniSock, SocketPolicy{}, CNIHandler(context.Background(), f.svc, NewMetrics()))
	if out := p.call(cniSock, nobody(65534), "POST /v1/cni/status {}"); !strings.HasPrefix(out, "dial: ") || !strings.Contains(out, "permission denied") {
		t.Errorf("CNI socket as nobody: %q, want permission denied", out)
	}
	if out := p.call(cniSock, root, "POST /v1/cni/status {}"); !strings.HasPrefix(out, "status 200") {
		t.Errorf("CNI socket as root: %q", out)
	}
}

func serveOn(t *testing.T, sock string, policy SocketPolicy, h http.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeUnix(ctx, sock, policy, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeUnix %s: %v", sock, err)
		}
	})
	waitForSocket(t, sock)
}

// TestListenUnixRefusesDirectoriesOthersControl: a socket directory owned by another user, or
// writable by its group, is refused; a sticky world-writable one (like /tmp) is not.
func TestListenUnixRefusesDirectoriesOthersControl(t *testing.T) {
	testutil.RequireRoot(t)
	base := t.TempDir()
	for _, tc := range []struct {
		name    string
		uid     int
		mode    os.FileMode
		wantErr string
	}{
		{"owned by nobody", 65534, 0o755, "owned by uid 65534"},
		{"group-writable", 0, 0o775, "writable by others"},
		{"sticky and world-writable", 0, 0o777 | os.ModeSticky, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(base, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, tc.uid, 0); err != nil {
				t.Fatal(err)
			}
			l, err := ListenUnix(filepath.Join(dir, "kuryr.sock"), SocketPolicy{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ListenUnix: %v", err)
				}
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatalf("ListenUnix in a directory %s: no error, want %q", tc.name, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ListenUnix: %v, want %q", err, tc.wantErr)
			}
		})
	}
}
