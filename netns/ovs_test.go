package netns

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/kuryr-pools/kuryr/test/testutil"
)

// requireOVS returns the OVSDB address of the userspace OVS that hack/ovs-up.sh runs (or
// KURYR_TEST_OVSDB), and requires its br-int.
func requireOVS(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	db := os.Getenv("KURYR_TEST_OVSDB")
	if db == "" {
		state := os.Getenv("KURYR_STATE_DIR")
		if state == "" {
			state = "/var/tmp/kuryr-test"
		}
		db = "unix:" + filepath.Join(state, "ovs", "db.sock")
	}
	_, err := exec.LookPath(OVSVsctl)
	if err == nil {
		_, err = ovsVsctl(context.Background(), db, "br-exists", "br-int")
	}
	testutil.Require(t, err == nil, fmt.Sprintf("Open vSwitch with br-int at %s (start it with hack/ovs-up.sh): %v", db, err))
	return db
}

func ovsGet(t *testing.T, db string, args ...string) string {
	t.Helper()
	out, err := ovsVsctl(context.Background(), db, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Trim(out, `"`)
}

func randomPortID(t *testing.T) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func ovsPod(t *testing.T, db string, pod ns.NetNS, i int) Attachment {
	return Attachment{
		Mode:      ModeOVS,
		NetnsPath: pod.Path(),
		IfName:    "eth0",
		PortID:    randomPortID(t),
		MAC:       mustMAC(t, fmt.Sprintf("fa:16:3e:00:03:%02x", i)),
		Addresses: []net.IPNet{mustCIDR(t, fmt.Sprintf("10.199.3.%d/24", 10+i))},
		Gateway:   net.ParseIP("10.199.3.1"),
		Bridge:    "br-int",
		PodUID:    fmt.Sprintf("0b1c2d3e-0000-4000-8000-%012d", i),
		OVSDB:     db,
	}
}

// TestOVSPlugTCPUnplug plugs two pods into br-int of a userspace OVS: the port's external_ids are
// set, TX checksum offload is off on both veth ends, TCP flows between the pods through br-int, and
// Unplug removes the OVS port and the veth.
func TestOVSPlugTCPUnplug(t *testing.T) {
	db := requireOVS(t)
	ctx := testCtx(t)
	podA, podB := newNS(t), newNS(t)
	a, b := ovsPod(t, db, podA, 1), ovsPod(t, db, podB, 2)
	for _, x := range []Attachment{a, b} {
		t.Cleanup(func() { _ = Unplug(context.Background(), x) })
		res, err := Plug(ctx, x)
		if err != nil {
			t.Fatalf("Plug %s: %v", x.PortID, err)
		}
		dev := HostIfName(x.PortID)
		if res.HostIfName != dev {
			t.Errorf("HostIfName = %q, want %q", res.HostIfName, dev)
		}
		for key, want := range map[string]string{
			"iface-id":     x.PortID,
			"attached-mac": x.MAC.String(),
			"iface-status": "active",
			"vm-uuid":      x.PodUID,
		} {
			if got := ovsGet(t, db, "get", "Interface", dev, "external_ids:"+key); got != want {
				t.Errorf("%s external_ids:%s = %q, want %q", dev, key, got, want)
			}
		}
		if on, err := txChecksum(dev); err != nil || on {
			t.Errorf("TX checksum offload of host end %s: on=%v, %v; want off", dev, on, err)
		}
		pod, _ := ns.GetNS(x.NetnsPath)
		if err := doIn(pod, func() error {
			on, err := txChecksum(x.IfName)
			if err == nil && on {
				err = fmt.Errorf("TX checksum offload of %s is on", x.IfName)
			}
			return err
		}); err != nil {
			t.Errorf("pod end: %v", err)
		}
		_ = pod.Close()
		if err := Check(ctx, x); err != nil {
			t.Errorf("Check %s: %v", x.PortID, err)
		}
	}

	tcpExchange(t, podA, "10.199.3.11", podB, "10.199.3.12")
	tcpExchange(t, podB, "10.199.3.12", podA, "10.199.3.11")

	for _, x := range []Attachment{a, b} {
		dev := HostIfName(x.PortID)
		for i := range 2 {
			if err := Unplug(ctx, x); err != nil {
				t.Fatalf("Unplug #%d %s: %v", i+1, x.PortID, err)
			}
		}
		if ports := strings.Fields(ovsGet(t, db, "list-ports", "br-int")); slices.Contains(ports, dev) {
			t.Errorf("port %s still on br-int after Unplug: %v", dev, ports)
		}
		if got := ovsGet(t, db, "--if-exists", "get", "Interface", dev, "name"); got != "" {
			t.Errorf("Interface %s still in OVSDB after Unplug", dev)
		}
		if _, err := openHostHandleLink(dev); !isNotFound(err) {
			t.Errorf("host veth %s after Unplug: %v, want not found", dev, err)
		}
	}
}

// TestOVSCheckMissingPort: the veth is fine but the OVS port is gone (OVS restarted with a fresh DB);
// Check says so.
func TestOVSCheckMissingPort(t *testing.T) {
	db := requireOVS(t)
	ctx := testCtx(t)
	pod := newNS(t)
	a := ovsPod(t, db, pod, 3)
	t.Cleanup(func() { _ = Unplug(context.Background(), a) })
	if _, err := Plug(ctx, a); err != nil {
		t.Fatalf("Plug: %v", err)
	}
	if err := Check(ctx, a); err != nil {
		t.Fatalf("Check: %v", err)
	}
	ovsGet(t, db, "del-port", "br-int", HostIfName(a.PortID))
	wantErrContaining(t, Check(ctx, a), "OVS interface "+HostIfName(a.PortID)+` has iface-id "", want "`+a.PortID)
}

// TestOVSUnreachable: with OVSDB unreachable Plug fails and leaves nothing behind.
func TestOVSUnreachable(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath(OVSVsctl); err != nil {
		testutil.Require(t, false, "ovs-vsctl is not installed")
	}
	ctx := testCtx(t)
	pod := newNS(t)
	a := ovsPod(t, "unix:"+filepath.Join(t.TempDir(), "nothing.sock"), pod, 4)
	_, err := Plug(ctx, a)
	wantErrContaining(t, err, "add "+HostIfName(a.PortID)+" to OVS bridge br-int")
	if names := linkNames(t, handleIn(t, pod)); len(names) != 0 {
		t.Errorf("links left in pod: %v", names)
	}
	if _, err := openHostHandleLink(HostIfName(a.PortID)); !isNotFound(err) {
		t.Errorf("host veth after failed Plug: %v, want not found", err)
	}
}

func openHostHandleLink(name string) (any, error) {
	h, err := openHostHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.LinkByName(name)
}
