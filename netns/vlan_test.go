package netns

import (
	"fmt"
	"net"
	"os/exec"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// The VLAN tests need 802.1Q, which this development machine's kernel lacks: hack/test-vlan-vm.sh
// runs them (-test.run VLAN) in a qemu VM with Debian's kernel. Every test builds its own topology:
//
//	node netns: trunk0 (veth, the VM NIC standing in for the trunk parent)
//	    |
//	peer netns: trunk0p with VLAN links "peer<id>", the other end of the trunk
//	pod netns:  eth0, the VLAN that Plug creates on trunk0

type vlanTopo struct {
	node, peer ns.NetNS
	nh, peerH  netlinksafe.Handle
}

func newVLANTopo(t *testing.T) *vlanTopo {
	t.Helper()
	requireVLAN(t)
	v := &vlanTopo{node: newNS(t), peer: newNS(t)}
	v.nh, v.peerH = handleIn(t, v.node), handleIn(t, v.peer)
	addVethTo(t, v.nh, "trunk0", "trunk0p", v.peer)
	setUp(t, v.peerH, "trunk0p")
	return v
}

// peerVLAN puts a VLAN with this ID and address on the far end of the trunk.
func (v *vlanTopo) peerVLAN(t *testing.T, id int, cidr string) {
	t.Helper()
	p, err := v.peerH.LinkByName("trunk0p")
	if err != nil {
		t.Fatal(err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = fmt.Sprintf("peer%d", id)
	la.ParentIndex = p.Attrs().Index
	if err := v.peerH.LinkAdd(&netlink.Vlan{LinkAttrs: la, VlanId: id}); err != nil {
		t.Fatalf("peer VLAN %d: %v", id, err)
	}
	addAddr(t, v.peerH, la.Name, cidr)
	setUp(t, v.peerH, la.Name)
}

func (v *vlanTopo) listVLANs(t *testing.T) []VLANLink {
	t.Helper()
	var out []VLANLink
	if err := doIn(v.node, func() error {
		var err error
		out, err = ListVLANs(testCtx(t), "trunk0")
		return err
	}); err != nil {
		t.Fatalf("ListVLANs: %v", err)
	}
	return out
}

// vlanPod is a pod on VLAN id with address 10.199.<subnet>.<10+i>/24.
func vlanPod(t *testing.T, pod ns.NetNS, id, subnet, i int) Attachment {
	return Attachment{
		Mode:      ModeVLAN,
		NetnsPath: pod.Path(),
		IfName:    "eth0",
		PortID:    fmt.Sprintf("v%02d45678-9abc-def0-1234-56789abcdef0", i),
		MAC:       mustMAC(t, fmt.Sprintf("fa:16:3e:00:%02x:%02x", subnet, i)),
		MTU:       1400,
		Addresses: []net.IPNet{mustCIDR(t, fmt.Sprintf("10.199.%d.%d/24", subnet, 10+i))},
		Gateway:   net.ParseIP(fmt.Sprintf("10.199.%d.1", subnet)),
		Routes:    []Route{{Dst: mustCIDR(t, "10.199.150.0/24"), GW: net.ParseIP(fmt.Sprintf("10.199.%d.254", subnet))}},
		VLAN:      id,
		Parent:    "trunk0",
	}
}

// holdNetns starts a process inside the netns and returns the /proc path of its netns: the netns then
// outlives its bind mount, as an old pod's netns does when a process still runs in it.
func holdNetns(t *testing.T, n ns.NetNS) string {
	t.Helper()
	var cmd *exec.Cmd
	if err := doIn(n, func() error {
		cmd = exec.Command("sleep", "600")
		return cmd.Start() // forks from the locked thread, so the child is in n
	}); err != nil {
		t.Fatalf("start a process in %s: %v", n.Path(), err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
}

func TestVLANPlugCheckTCPUnplug(t *testing.T) {
	v := newVLANTopo(t)
	ctx := testCtx(t)
	v.peerVLAN(t, 100, "10.199.1.1/24")
	pod := newNS(t)
	a := vlanPod(t, pod, 100, 1, 1)

	res, err := plugIn(ctx, v.node, a)
	if err != nil {
		t.Fatalf("Plug: %v", err)
	}
	if res.MTU != 1400 || res.HostIfName != "" || res.Sandbox != pod.Path() || res.ContainerMAC.String() != a.MAC.String() {
		t.Errorf("Plug result = %+v", res)
	}
	ph := handleIn(t, pod)
	l, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatalf("eth0: %v", err)
	}
	trunk, err := v.nh.LinkByName("trunk0")
	if err != nil {
		t.Fatal(err)
	}
	vl, ok := l.(*netlink.Vlan)
	switch {
	case !ok:
		t.Fatalf("eth0 is a %s, want vlan", l.Type())
	case vl.VlanId != 100 || vl.VlanProtocol != netlink.VLAN_PROTOCOL_8021Q:
		t.Errorf("eth0: VLAN %d protocol %v, want 802.1Q 100", vl.VlanId, vl.VlanProtocol)
	case vl.HardwareAddr.String() != "fa:16:3e:00:01:01" || vl.MTU != 1400 || vl.Flags&net.FlagUp == 0:
		t.Errorf("eth0: MAC %s MTU %d flags %v", vl.HardwareAddr, vl.MTU, vl.Flags)
	case vl.ParentIndex != trunk.Attrs().Index || vl.NetNsID < 0:
		t.Errorf("eth0 parent: ifindex %d in netns id %d, want trunk0 (%d) in the node netns", vl.ParentIndex, vl.NetNsID, trunk.Attrs().Index)
	}
	if names := linkNames(t, ph); !slices.Equal(names, []string{"eth0"}) {
		t.Errorf("links in pod = %v, want only eth0", names)
	}
	if names := linkNames(t, v.nh); !slices.Equal(names, []string{"trunk0"}) {
		t.Errorf("links on node = %v: the VLAN must be created in the pod netns, not on the node", names)
	}
	if got := v.listVLANs(t); len(got) != 1 || got[0].VLAN != 100 || got[0].Name != "eth0" || got[0].MAC.String() != a.MAC.String() {
		t.Errorf("ListVLANs = %+v, want the pod's eth0", got)
	}
	if err := checkIn(ctx, v.node, a); err != nil {
		t.Errorf("Check: %v", err)
	}

	tcpExchange(t, v.peer, "10.199.1.1", pod, "10.199.1.11")
	tcpExchange(t, pod, "10.199.1.11", v.peer, "10.199.1.1")

	if err := ph.LinkSetMTU(l, 1300); err != nil {
		t.Fatal(err)
	}
	wantErrContaining(t, checkIn(ctx, v.node, a), "MTU is 1300, want 1400")
	b := a
	b.VLAN = 101
	wantErrContaining(t, checkIn(ctx, v.node, b), "VLAN ID is 100, want 101")

	for i := range 2 {
		if err := unplugIn(ctx, v.node, a); err != nil {
			t.Fatalf("Unplug #%d: %v", i+1, err)
		}
		if names := linkNames(t, ph); len(names) != 0 {
			t.Errorf("links in pod after Unplug #%d: %v", i+1, names)
		}
	}
	if got := v.listVLANs(t); len(got) != 0 {
		t.Errorf("ListVLANs after Unplug = %+v", got)
	}
}

func TestVLANParentMTU(t *testing.T) {
	v := newVLANTopo(t)
	ctx := testCtx(t)
	trunk, _ := v.nh.LinkByName("trunk0")
	if err := v.nh.LinkSetMTU(trunk, 1450); err != nil {
		t.Fatal(err)
	}
	pod := newNS(t)
	a := vlanPod(t, pod, 110, 5, 1)

	a.MTU = 9000
	_, err := plugIn(ctx, v.node, a)
	wantErrContaining(t, err, "network MTU 9000 is larger than MTU 1450 of parent trunk0")
	if names := linkNames(t, handleIn(t, pod)); len(names) != 0 {
		t.Errorf("links in pod after a refused Plug: %v", names)
	}

	a.MTU = 0 // the parent's
	res, err := plugIn(ctx, v.node, a)
	if err != nil {
		t.Fatalf("Plug with MTU 0: %v", err)
	}
	l, err := handleIn(t, pod).LinkByName("eth0")
	if err != nil || l.Attrs().MTU != 1450 || res.MTU != 1450 {
		t.Errorf("eth0 MTU %v (result %d), want the parent's 1450 (%v)", l, res.MTU, err)
	}
	if err := checkIn(ctx, v.node, a); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// TestVLANStaleNetns: an old pod's netns still holds the VLAN ID (its DEL never ran) when a new pod
// gets the same subport; Plug finds the old link and removes it, both for a bind-mounted netns and
// for one that only a process holds.
func TestVLANStaleNetns(t *testing.T) {
	v := newVLANTopo(t)
	ctx := testCtx(t)
	v.peerVLAN(t, 200, "10.199.4.1/24")

	t.Run("bind mounted", func(t *testing.T) {
		old, pod := newNS(t), newNS(t)
		if _, err := plugIn(ctx, v.node, vlanPod(t, old, 200, 4, 1)); err != nil {
			t.Fatalf("Plug old: %v", err)
		}
		a := vlanPod(t, pod, 200, 4, 2)
		if _, err := plugIn(ctx, v.node, a); err != nil {
			t.Fatalf("Plug new pod with the VLAN ID held by the old netns: %v", err)
		}
		if names := linkNames(t, handleIn(t, old)); len(names) != 0 {
			t.Errorf("old netns still has %v", names)
		}
		if err := checkIn(ctx, v.node, a); err != nil {
			t.Errorf("Check new pod: %v", err)
		}
		tcpExchange(t, v.peer, "10.199.4.1", pod, "10.199.4.12")
		if err := unplugIn(ctx, v.node, a); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("held by a process", func(t *testing.T) {
		old := newNS(t)
		if _, err := plugIn(ctx, v.node, vlanPod(t, old, 200, 4, 3)); err != nil {
			t.Fatalf("Plug old: %v", err)
		}
		held := holdNetns(t, old)
		if err := unmount(old.Path()); err != nil {
			t.Fatal(err)
		}
		_ = old.Close()
		heldNS, err := ns.GetNS(held)
		if err != nil {
			t.Fatal(err)
		}
		defer heldNS.Close()
		if names := linkNames(t, handleIn(t, heldNS)); !slices.Equal(names, []string{"eth0"}) {
			t.Fatalf("lingering netns has %v, want the old eth0", names)
		}

		pod := newNS(t)
		a := vlanPod(t, pod, 200, 4, 4)
		if _, err := plugIn(ctx, v.node, a); err != nil {
			t.Fatalf("Plug new pod with the VLAN ID held by a lingering netns: %v", err)
		}
		if names := linkNames(t, handleIn(t, heldNS)); len(names) != 0 {
			t.Errorf("lingering netns still has %v", names)
		}
		tcpExchange(t, v.peer, "10.199.4.1", pod, "10.199.4.14")
	})
}

// TestVLANUnplugLingeringNetns: DEL arrives after the runtime removed the netns path, but a process
// keeps the netns alive. Unplug finds the VLAN by parent, VLAN ID and MAC, and leaves a link with
// another MAC alone (the VLAN ID may already belong to another pod).
func TestVLANUnplugLingeringNetns(t *testing.T) {
	v := newVLANTopo(t)
	ctx := testCtx(t)
	pod := newNS(t)
	a := vlanPod(t, pod, 202, 6, 1)
	if _, err := plugIn(ctx, v.node, a); err != nil {
		t.Fatalf("Plug: %v", err)
	}
	held := holdNetns(t, pod)
	if err := unmount(pod.Path()); err != nil {
		t.Fatal(err)
	}
	heldNS, err := ns.GetNS(held)
	if err != nil {
		t.Fatal(err)
	}
	defer heldNS.Close()
	hh := handleIn(t, heldNS)

	other := a
	other.MAC = mustMAC(t, "fa:16:3e:99:99:99")
	if err := unplugIn(ctx, v.node, other); err != nil {
		t.Fatalf("Unplug with another MAC: %v", err)
	}
	if names := linkNames(t, hh); !slices.Equal(names, []string{"eth0"}) {
		t.Fatalf("Unplug with another MAC changed the lingering netns: %v", names)
	}
	if err := unplugIn(ctx, v.node, a); err != nil {
		t.Fatalf("Unplug: %v", err)
	}
	if names := linkNames(t, hh); len(names) != 0 {
		t.Errorf("lingering netns after Unplug: %v", names)
	}
}

func TestVLANRollback(t *testing.T) {
	v := newVLANTopo(t)
	ctx := testCtx(t)
	pod := newNS(t)
	a := vlanPod(t, pod, 300, 7, 1)
	a.Routes = []Route{{Dst: mustCIDR(t, "10.199.201.0/24"), GW: net.ParseIP("10.199.99.1")}} // not on-link
	_, err := plugIn(ctx, v.node, a)
	wantErrContaining(t, err, "plug VLAN 300", "add route 10.199.201.0/24 via 10.199.99.1")
	if names := linkNames(t, handleIn(t, pod)); len(names) != 0 {
		t.Errorf("links left in pod: %v", names)
	}
	if got := v.listVLANs(t); len(got) != 0 {
		t.Errorf("VLAN links left on trunk0: %+v", got)
	}
}

func TestVLANRemoveStale(t *testing.T) {
	v := newVLANTopo(t)
	ctx := testCtx(t)
	pods := []ns.NetNS{newNS(t), newNS(t)}
	for i, p := range pods {
		if _, err := plugIn(ctx, v.node, vlanPod(t, p, 400+i, 8, i)); err != nil {
			t.Fatalf("Plug: %v", err)
		}
	}
	var n int
	if err := doIn(v.node, func() error {
		var err error
		n, err = RemoveStaleVLAN(ctx, "trunk0", 401)
		return err
	}); err != nil || n != 1 {
		t.Fatalf("RemoveStaleVLAN = %d, %v; want 1", n, err)
	}
	got := v.listVLANs(t)
	if len(got) != 1 || got[0].VLAN != 400 {
		t.Errorf("ListVLANs after removing 401 = %+v, want only 400", got)
	}
}
