package netns

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/kuryr-pools/kuryr/test/testutil"
)

// bridgePod is a pod attachment on the Linux bridge kbr0 of a test node netns, in 10.199.2.0/24.
func bridgePod(t *testing.T, pod ns.NetNS, i int) Attachment {
	return Attachment{
		Mode:      ModeBridge,
		NetnsPath: pod.Path(),
		IfName:    "eth0",
		PortID:    fmt.Sprintf("b%02d45678-9abc-def0-1234-56789abcdef0", i),
		MAC:       mustMAC(t, fmt.Sprintf("fa:16:3e:00:02:%02x", i)),
		Addresses: []net.IPNet{
			mustCIDR(t, fmt.Sprintf("10.199.2.%d/24", 10+i)),
			mustCIDR(t, fmt.Sprintf("fd00:199:2::%d/64", 10+i)),
		},
		Gateway: net.ParseIP("10.199.2.1"),
		Routes:  []Route{{Dst: mustCIDR(t, "10.199.200.0/24"), GW: net.ParseIP("10.199.2.254")}},
		Bridge:  "kbr0",
	}
}

func TestBridgePlugCheckUnplug(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := testCtx(t)
	node, pod := newNS(t), newNS(t)
	a := bridgePod(t, pod, 1)
	a.MTU = 1450

	res, err := plugIn(ctx, node, a)
	if err != nil {
		t.Fatalf("Plug: %v", err)
	}
	if res.HostIfName != "tapb0145678-9a" || res.MTU != 1450 || res.Sandbox != pod.Path() || res.ContainerMAC.String() != a.MAC.String() {
		t.Errorf("Plug result = %+v", res)
	}

	// The kernel state, read independently of Check.
	ph, nh := handleIn(t, pod), handleIn(t, node)
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatalf("eth0 in pod: %v", err)
	}
	if _, ok := eth0.(*netlink.Veth); !ok || eth0.Attrs().HardwareAddr.String() != "fa:16:3e:00:02:01" || eth0.Attrs().MTU != 1450 {
		t.Errorf("eth0 = %s %s mtu %d", eth0.Type(), eth0.Attrs().HardwareAddr, eth0.Attrs().MTU)
	}
	tap, err := nh.LinkByName(res.HostIfName)
	if err != nil {
		t.Fatalf("host veth: %v", err)
	}
	br, err := nh.LinkByName("kbr0")
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if _, ok := br.(*netlink.Bridge); !ok || br.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("kbr0 is %s, flags %v", br.Type(), br.Attrs().Flags)
	}
	if tap.Attrs().MasterIndex != br.Attrs().Index || tap.Attrs().MTU != 1450 || tap.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host veth: master %d (bridge %d), mtu %d, flags %v", tap.Attrs().MasterIndex, br.Attrs().Index, tap.Attrs().MTU, tap.Attrs().Flags)
	}
	routes, err := ph.RouteList(eth0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !hasRoute(routes, nil, net.ParseIP("10.199.2.1")) || !hasRoute(routes, &a.Routes[0].Dst, a.Routes[0].GW) {
		t.Errorf("routes in pod: %+v", routes)
	}
	if names := linkNames(t, ph); !slices.Equal(names, []string{"eth0"}) {
		t.Errorf("links in pod = %v, want only eth0 (no temporary names left)", names)
	}

	if err := checkIn(ctx, node, a); err != nil {
		t.Errorf("Check after Plug: %v", err)
	}

	for i := range 2 { // the second Unplug finds nothing and must succeed
		if err := unplugIn(ctx, node, a); err != nil {
			t.Fatalf("Unplug #%d: %v", i+1, err)
		}
		if names := linkNames(t, ph); len(names) != 0 {
			t.Errorf("after Unplug #%d links in pod = %v", i+1, names)
		}
		if _, err := nh.LinkByName(res.HostIfName); !isNotFound(err) {
			t.Errorf("after Unplug #%d host veth lookup = %v, want not found", i+1, err)
		}
	}
	if err := checkIn(ctx, node, a); err == nil {
		t.Error("Check after Unplug succeeded")
	}
}

func TestBridgeTwoPodsTCP(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := testCtx(t)
	node, podA, podB := newNS(t), newNS(t), newNS(t)
	a, b := bridgePod(t, podA, 1), bridgePod(t, podB, 2)
	for _, x := range []Attachment{a, b} {
		if _, err := plugIn(ctx, node, x); err != nil {
			t.Fatalf("Plug %s: %v", x.PortID, err)
		}
	}
	tcpExchange(t, podA, "10.199.2.11", podB, "10.199.2.12")
	tcpExchange(t, podB, "10.199.2.12", podA, "10.199.2.11")
	tcpExchange(t, podA, "fd00:199:2::11", podB, "fd00:199:2::12") // IPv6 right after Plug: no DAD wait
	for _, x := range []Attachment{a, b} {
		if err := unplugIn(ctx, node, x); err != nil {
			t.Fatalf("Unplug %s: %v", x.PortID, err)
		}
	}
}

// TestBridgeConcurrentPlugs plugs pods in parallel, as the agent does: the bridge is created once
// (a racing creator gets EEXIST), and every pod ends up whole.
func TestBridgeConcurrentPlugs(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := testCtx(t)
	node := newNS(t)
	const n = 8
	atts := make([]Attachment, n)
	for i := range atts {
		atts[i] = bridgePod(t, newNS(t), 10+i)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range atts {
		wg.Go(func() { _, errs[i] = plugIn(ctx, node, atts[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Plug %d: %v", i, err)
		}
		if err := checkIn(ctx, node, atts[i]); err != nil {
			t.Errorf("Check %d: %v", i, err)
		}
	}
	nh := handleIn(t, node)
	if got := len(linkNames(t, nh)); got != n+1 {
		t.Errorf("node has %d links, want %d veths + the bridge: %v", got, n, linkNames(t, nh))
	}
	var veths []HostVeth
	if err := doIn(node, func() error {
		var err error
		veths, err = ListHostVeths(ctx)
		return err
	}); err != nil {
		t.Fatalf("ListHostVeths: %v", err)
	}
	var want, got []string
	for _, a := range atts {
		want = append(want, HostIfName(a.PortID)+" "+a.PortID[:11]+" kbr0")
	}
	for _, v := range veths {
		got = append(got, v.Name+" "+v.PortPrefix+" "+v.Master)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("ListHostVeths = %v, want %v", got, want)
	}
	for i := range atts {
		wg.Go(func() { errs[i] = unplugIn(ctx, node, atts[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Unplug %d: %v", i, err)
		}
	}
	if names := linkNames(t, nh); !slices.Equal(names, []string{"kbr0"}) {
		t.Errorf("node links after Unplug = %v, want only the bridge", names)
	}
}

// TestCheckReportsMismatch breaks one thing at a time and expects Check to name it.
func TestCheckReportsMismatch(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, a Attachment, node, pod ns.NetNS)
		alter   func(a *Attachment)
		want    string
	}{
		{name: "mtu", want: "MTU is 1300, want 1500", breakIt: func(t *testing.T, a Attachment, _, pod ns.NetNS) {
			h := handleIn(t, pod)
			l, _ := h.LinkByName("eth0")
			if err := h.LinkSetMTU(l, 1300); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "mac", want: "MAC is fa:16:3e:ff:ff:ff, want fa:16:3e:00:02:03", breakIt: func(t *testing.T, a Attachment, _, pod ns.NetNS) {
			h := handleIn(t, pod)
			l, _ := h.LinkByName("eth0")
			if err := h.LinkSetHardwareAddr(l, mustMAC(t, "fa:16:3e:ff:ff:ff")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "down", want: "link is down", breakIt: func(t *testing.T, a Attachment, _, pod ns.NetNS) {
			h := handleIn(t, pod)
			l, _ := h.LinkByName("eth0")
			if err := h.LinkSetDown(l); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "address", want: "address 10.199.2.13/24 missing", breakIt: func(t *testing.T, a Attachment, _, pod ns.NetNS) {
			h := handleIn(t, pod)
			l, _ := h.LinkByName("eth0")
			if err := h.AddrDel(l, &netlink.Addr{IPNet: &a.Addresses[0]}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "default route", want: "default route via 10.199.2.1 missing", breakIt: func(t *testing.T, a Attachment, _, pod ns.NetNS) {
			h := handleIn(t, pod)
			l, _ := h.LinkByName("eth0")
			if err := h.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: defaultDst(a.Gateway), Gw: a.Gateway}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "host route", want: "route 10.199.200.0/24 via 10.199.2.254 missing", breakIt: func(t *testing.T, a Attachment, _, pod ns.NetNS) {
			h := handleIn(t, pod)
			l, _ := h.LinkByName("eth0")
			if err := h.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &a.Routes[0].Dst, Gw: a.Routes[0].GW}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "off the bridge", want: "is not on bridge kbr0", breakIt: func(t *testing.T, a Attachment, node, _ ns.NetNS) {
			h := handleIn(t, node)
			l, _ := h.LinkByName(HostIfName(a.PortID))
			if err := h.LinkSetNoMaster(l); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "wrong kind", want: "link is a veth, want vlan", alter: func(a *Attachment) {
			a.Mode, a.VLAN, a.Parent = ModeVLAN, 100, "kbr0"
		}},
		{name: "missing link", want: "link not found", alter: func(a *Attachment) { a.IfName = "eth1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			node, pod := newNS(t), newNS(t)
			a := bridgePod(t, pod, 3)
			if _, err := plugIn(ctx, node, a); err != nil {
				t.Fatalf("Plug: %v", err)
			}
			if err := checkIn(ctx, node, a); err != nil {
				t.Fatalf("Check before breaking anything: %v", err)
			}
			if tc.breakIt != nil {
				tc.breakIt(t, a, node, pod)
			}
			if tc.alter != nil {
				tc.alter(&a)
			}
			wantErrContaining(t, checkIn(ctx, node, a), tc.want)
		})
	}
}

// TestPlugRollback makes the last step of Plug fail and expects nothing left behind.
func TestPlugRollback(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := testCtx(t)
	node, pod := newNS(t), newNS(t)
	a := bridgePod(t, pod, 4)
	a.Routes = []Route{{Dst: mustCIDR(t, "10.199.201.0/24"), GW: net.ParseIP("10.199.99.1")}} // not on-link
	_, err := plugIn(ctx, node, a)
	wantErrContaining(t, err, "add route 10.199.201.0/24 via 10.199.99.1", pod.Path())
	if names := linkNames(t, handleIn(t, pod)); len(names) != 0 {
		t.Errorf("links left in pod: %v", names)
	}
	if names := linkNames(t, handleIn(t, node)); !slices.Equal(names, []string{"kbr0"}) {
		t.Errorf("links left on node: %v, want only the bridge", names)
	}
}

// TestPlugReplacesLeftover plugs the same attachment twice without Unplug (an agent that died after
// plugging and retries the ADD): the second Plug replaces the first.
func TestPlugReplacesLeftover(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := testCtx(t)
	node, pod := newNS(t), newNS(t)
	a := bridgePod(t, pod, 5)
	for i := range 2 {
		if _, err := plugIn(ctx, node, a); err != nil {
			t.Fatalf("Plug #%d: %v", i+1, err)
		}
	}
	if err := checkIn(ctx, node, a); err != nil {
		t.Errorf("Check: %v", err)
	}
	if names := linkNames(t, handleIn(t, pod)); !slices.Equal(names, []string{"eth0"}) {
		t.Errorf("links in pod: %v", names)
	}
}

func TestUnplugMissingNetns(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := testCtx(t)
	node := newNS(t)
	for _, mode := range []Mode{ModeBridge, ModeVLAN} {
		a := Attachment{Mode: mode, NetnsPath: "/var/run/netns/kuryr-test-never-existed", IfName: "eth0",
			PortID: "deadbeef-0000", Bridge: "kbr0", Parent: "nosuchparent", VLAN: 7, MAC: mustMAC(t, "fa:16:3e:00:00:07")}
		if err := unplugIn(ctx, node, a); err != nil {
			t.Errorf("Unplug %s with a missing netns: %v", mode, err)
		}
		if _, err := plugIn(ctx, node, a); err == nil {
			t.Errorf("Plug %s into a missing netns succeeded", mode)
		} else {
			wantErrContaining(t, err, a.NetnsPath)
		}
	}
}

// TestUnplugAfterNetnsPathRemoved: the runtime removed the netns path before DEL reached the agent,
// but the netns lingers (a process or an fd still holds it). The veth must not stay behind.
func TestUnplugAfterNetnsPathRemoved(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := testCtx(t)
	node := newNS(t)
	pod := newNS(t)
	a := bridgePod(t, pod, 6)
	if _, err := plugIn(ctx, node, a); err != nil {
		t.Fatalf("Plug: %v", err)
	}
	ph := handleIn(t, pod) // holds the netns after its path is gone
	if err := unmount(pod.Path()); err != nil {
		t.Fatal(err)
	}
	if err := unplugIn(ctx, node, a); err != nil {
		t.Fatalf("Unplug: %v", err)
	}
	if _, err := handleIn(t, node).LinkByName(HostIfName(a.PortID)); !isNotFound(err) {
		t.Errorf("host veth lookup after Unplug = %v, want not found", err)
	}
	if names := linkNames(t, ph); len(names) != 0 {
		t.Errorf("links in the lingering pod netns after Unplug: %v", names)
	}
}

func TestPlugContextCanceled(t *testing.T) {
	testutil.RequireRoot(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	pod := newNS(t)
	if _, err := Plug(ctx, bridgePod(t, pod, 7)); err == nil {
		t.Fatal("Plug with a canceled context succeeded")
	}
	if names := linkNames(t, handleIn(t, pod)); len(names) != 0 {
		t.Errorf("links in pod: %v", names)
	}
}

// BenchmarkBridgePlugUnplug measures the kernel work of one pod ADD and DEL in bridge mode, as the
// agent does it (the agent adds the checkpoint and the socket round trip). It reports Plug and
// Unplug separately.
//
//	go test -run '^$' -bench BridgePlugUnplug ./netns
func BenchmarkBridgePlugUnplug(b *testing.B) {
	testutil.RequireRoot(b)
	ctx := context.Background()
	mk := func() ns.NetNS {
		n, err := testutils.NewNS()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = n.Close(); _ = testutils.UnmountNS(n) })
		return n
	}
	node, pod := mk(), mk()
	a := Attachment{Mode: ModeBridge, NetnsPath: pod.Path(), IfName: "eth0", PortID: "bench567-89ab-cdef",
		MAC: net.HardwareAddr{0xfa, 0x16, 0x3e, 0, 9, 9}, Addresses: []net.IPNet{{IP: net.IPv4(10, 199, 9, 9), Mask: net.CIDRMask(24, 32)}},
		Gateway: net.IPv4(10, 199, 9, 1), Bridge: "kbr0"}
	var plug, unplug time.Duration
	b.ResetTimer()
	err := doIn(node, func() error {
		for range b.N {
			t0 := time.Now()
			if _, err := Plug(ctx, a); err != nil {
				return err
			}
			t1 := time.Now()
			if err := Unplug(ctx, a); err != nil {
				return err
			}
			plug, unplug = plug+t1.Sub(t0), unplug+time.Since(t1)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(plug.Microseconds())/float64(b.N), "us/plug")
	b.ReportMetric(float64(unplug.Microseconds())/float64(b.N), "us/unplug")
}
