package netns

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"

	"github.com/kuryr-pools/kuryr/test/testutil"
)

// inVM is set by hack/run-in-vm.sh's /init: inside the VM a missing kernel feature is a failure.
var inVM = os.Getenv("KURYR_IN_VM") == "1"

func testCtx(t *testing.T) context.Context {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newNS creates a bind-mounted netns under /var/run/netns, removed at the end of the test unless
// the test unmounted it itself.
func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		if _, err := os.Stat(n.Path()); err == nil {
			if err := testutils.UnmountNS(n); err != nil {
				t.Errorf("remove netns %s: %v", n.Path(), err)
			}
		}
	})
	return n
}

// handleIn opens a NETLINK_ROUTE handle in n, closed at the end of the test.
func handleIn(t *testing.T, n ns.NetNS) netlinksafe.Handle {
	t.Helper()
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(n.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", n.Path(), err)
	}
	t.Cleanup(h.Close)
	return h
}

// doIn runs fn with the calling thread in n: the code under test then treats n as the node netns.
func doIn(n ns.NetNS, fn func() error) error {
	return n.Do(func(ns.NetNS) error { return fn() })
}

func plugIn(ctx context.Context, node ns.NetNS, a Attachment) (Result, error) {
	var r Result
	err := doIn(node, func() error {
		var err error
		r, err = Plug(ctx, a)
		return err
	})
	return r, err
}

func unplugIn(ctx context.Context, node ns.NetNS, a Attachment) error {
	return doIn(node, func() error { return Unplug(ctx, a) })
}

func checkIn(ctx context.Context, node ns.NetNS, a Attachment) error {
	return doIn(node, func() error { return Check(ctx, a) })
}

func mustCIDR(t *testing.T, s string) net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return *n
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// linkNames lists the links of a netns, loopback excluded.
func linkNames(t *testing.T, h netlinksafe.Handle) []string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback == 0 {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// addVethTo creates a veth in the netns h belongs to, with the peer in peerNS (nil: the same netns),
// both up.
func addVethTo(t *testing.T, h netlinksafe.Handle, name, peer string, peerNS ns.NetNS) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	v := &netlink.Veth{LinkAttrs: la, PeerName: peer, PeerTxQLen: -1}
	if peerNS != nil {
		v.PeerNamespace = netlink.NsFd(int(peerNS.Fd()))
	}
	if err := h.LinkAdd(v); err != nil {
		t.Fatalf("create veth %s/%s: %v", name, peer, err)
	}
	setUp(t, h, name)
	if peerNS == nil {
		setUp(t, h, peer)
	}
}

func setUp(t *testing.T, h netlinksafe.Handle, name string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}

func addAddr(t *testing.T, h netlinksafe.Handle, name, cidr string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	n := mustCIDR(t, cidr)
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &n}); err != nil {
		t.Fatalf("add %s to %s: %v", cidr, name, err)
	}
}

// tcpExchange connects from the client netns to a listener on serverAddr in the server netns, sends
// a line and reads it back, and checks that the server saw the connection come from wantClientIP:
// the traffic really crossed the link under test.
func tcpExchange(t *testing.T, server ns.NetNS, serverIP string, client ns.NetNS, wantClientIP string) {
	t.Helper()
	var ln net.Listener
	if err := doIn(server, func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(serverIP, "0"))
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", serverIP, server.Path(), err)
	}
	defer ln.Close()
	peer := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			peer <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			peer <- "read: " + err.Error()
			return
		}
		_, _ = c.Write([]byte(line))
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		peer <- host
	}()
	var conn net.Conn
	if err := doIn(client, func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: 10 * time.Second}).Dial("tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", ln.Addr(), client.Path(), err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	msg := fmt.Sprintf("hello from %s\n", wantClientIP)
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || got != msg {
		t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
	}
	if from := <-peer; !net.ParseIP(from).Equal(net.ParseIP(wantClientIP)) {
		t.Fatalf("server saw the connection from %q, want %s", from, wantClientIP)
	}
}

var vlanProbe struct {
	once sync.Once
	err  error
}

// requireVLAN skips the test when the kernel cannot create 802.1Q links (this machine's kernel has no
// 8021q). That is a plain skip even under KURYR_REQUIRE_ALL=1: hack/test-vlan-vm.sh, which `make test`
// runs, is where these tests are required, in a VM with Debian's kernel; there (KURYR_IN_VM=1) a
// missing 8021q fails them.
func requireVLAN(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	vlanProbe.once.Do(func() { vlanProbe.err = probeVLAN() })
	if vlanProbe.err == nil {
		return
	}
	if inVM {
		t.Fatalf("the VM's kernel cannot create VLAN links: %v", vlanProbe.err)
	}
	t.Skipf("kernel cannot create VLAN links (%v); hack/test-vlan-vm.sh runs these tests in a VM with Debian's kernel", vlanProbe.err)
}

// probeVLAN tries a VLAN on a veth in a throwaway netns.
func probeVLAN() error {
	tmp, err := ns.TempNetNS()
	if err != nil {
		return err
	}
	defer tmp.Close()
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(tmp.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	la := netlink.NewLinkAttrs()
	la.Name = "probe0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "probe1", PeerTxQLen: -1}); err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	p, err := h.LinkByName("probe0")
	if err != nil {
		return err
	}
	vla := netlink.NewLinkAttrs()
	vla.Name = "probe0.9"
	vla.ParentIndex = p.Attrs().Index
	return h.LinkAdd(&netlink.Vlan{LinkAttrs: vla, VlanId: 9})
}

// unmount removes a netns bind mount and its mount point; the netns lives on while anything holds it.
func unmount(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return os.Remove(path)
}

func wantErrContaining(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not contain %q", err, s)
		}
	}
}
