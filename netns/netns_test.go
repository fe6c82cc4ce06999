package netns

import (
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kuryr-pools/kuryr/test/testutil"
)

func validAttachment(t *testing.T, mode Mode) Attachment {
	return Attachment{
		Mode:      mode,
		NetnsPath: "/var/run/netns/pod",
		IfName:    "eth0",
		PortID:    "0123456789abcdef",
		MAC:       mustMAC(t, "fa:16:3e:12:34:56"),
		MTU:       1450,
		Addresses: []net.IPNet{mustCIDR(t, "10.199.0.5/24"), mustCIDR(t, "fd00:199::5/64")},
		Gateway:   net.ParseIP("10.199.0.1"),
		Routes:    []Route{{Dst: mustCIDR(t, "10.199.100.0/24"), GW: net.ParseIP("10.199.0.254")}},
		VLAN:      100,
		Parent:    "ens3",
		Bridge:    "br-int",
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   Mode
		change func(a *Attachment)
		plug   string // substring of the Plug/Check validation error; "" = valid
		unplug string // the same for Unplug
	}{
		{name: "valid vlan", mode: ModeVLAN},
		{name: "valid ovs", mode: ModeOVS},
		{name: "valid bridge", mode: ModeBridge},
		{name: "unknown mode", mode: "macvlan", plug: `mode "macvlan" is not one of`, unplug: `mode "macvlan"`},
		{name: "no netns", mode: ModeVLAN, change: func(a *Attachment) { a.NetnsPath = "" }, plug: "netns path is empty", unplug: "netns path is empty"},
		{name: "no ifname", mode: ModeVLAN, change: func(a *Attachment) { a.IfName = "" }, plug: "ifname: empty", unplug: "ifname: empty"},
		{name: "long ifname", mode: ModeVLAN, change: func(a *Attachment) { a.IfName = "eth0123456789012" }, plug: "longer than 15", unplug: "longer than 15"},
		{name: "slash in ifname", mode: ModeVLAN, change: func(a *Attachment) { a.IfName = "a/b" }, plug: "contains '/'", unplug: "contains '/'"},
		{name: "vlan 0", mode: ModeVLAN, change: func(a *Attachment) { a.VLAN = 0 }, plug: "VLAN ID 0 is outside 1-4094"},
		{name: "vlan 4095", mode: ModeVLAN, change: func(a *Attachment) { a.VLAN = 4095 }, plug: "VLAN ID 4095", unplug: "VLAN ID 4095"},
		{name: "vlan without parent", mode: ModeVLAN, change: func(a *Attachment) { a.Parent = "" }, plug: "parent: empty"},
		{name: "vlan needs no bridge", mode: ModeVLAN, change: func(a *Attachment) { a.Bridge, a.PortID = "", "" }},
		{name: "ovs without bridge", mode: ModeOVS, change: func(a *Attachment) { a.Bridge = "" }, plug: "bridge: empty", unplug: "bridge: empty"},
		{name: "bridge without port", mode: ModeBridge, change: func(a *Attachment) { a.PortID = "" }, plug: "port ID is empty", unplug: "port ID is empty"},
		{name: "port id with colon", mode: ModeBridge, change: func(a *Attachment) { a.PortID = "ab:cd" }, plug: `port ID "ab:cd"`, unplug: `port ID "ab:cd"`},
		{name: "no MAC", mode: ModeOVS, change: func(a *Attachment) { a.MAC = nil }, plug: "not a 6-byte Ethernet address"},
		{name: "multicast MAC", mode: ModeOVS, change: func(a *Attachment) { a.MAC = mustMAC(t, "01:00:5e:00:00:01") }, plug: "multicast", unplug: "multicast"},
		{name: "zero MAC", mode: ModeOVS, change: func(a *Attachment) { a.MAC = make(net.HardwareAddr, 6) }, plug: "all zeroes", unplug: "all zeroes"},
		{name: "long MAC", mode: ModeOVS, change: func(a *Attachment) { a.MAC = mustMAC(t, "00:00:00:00:fe:80:00:00") }, plug: "6-byte", unplug: "6-byte"},
		{name: "MTU too small", mode: ModeVLAN, change: func(a *Attachment) { a.MTU = 67 }, plug: "MTU 67 is outside"},
		{name: "MTU 0 means the parent's", mode: ModeVLAN, change: func(a *Attachment) { a.MTU = 0 }},
		{name: "address without mask", mode: ModeVLAN, change: func(a *Attachment) { a.Addresses[0].Mask = nil }, plug: "has no IP or no prefix length"},
		{name: "address /0", mode: ModeVLAN, change: func(a *Attachment) { a.Addresses[0].Mask = net.CIDRMask(0, 32) }, plug: "bad prefix length"},
		{name: "v4 address v6 mask", mode: ModeVLAN, change: func(a *Attachment) { a.Addresses[0].Mask = net.CIDRMask(64, 128) }, plug: "bad prefix length"},
		{name: "gateway without its family", mode: ModeVLAN, change: func(a *Attachment) { a.Addresses = a.Addresses[1:] }, plug: "gateway 10.199.0.1 has no address of its family"},
		{name: "no gateway", mode: ModeVLAN, change: func(a *Attachment) { a.Gateway = nil }},
		{name: "route mixing families", mode: ModeVLAN, change: func(a *Attachment) { a.Routes[0].GW = net.ParseIP("fd00::1") }, plug: "mixes address families"},
		{name: "route without destination", mode: ModeVLAN, change: func(a *Attachment) { a.Routes[0].Dst = net.IPNet{} }, plug: "has no destination"},
		{name: "unplug needs no addresses", mode: ModeVLAN, change: func(a *Attachment) { a.Addresses[0].Mask = nil }, plug: "prefix length"},
		{name: "unplug needs no vlan or MAC", mode: ModeVLAN, change: func(a *Attachment) { a.VLAN, a.Parent, a.MAC = 0, "", nil }, plug: "VLAN ID 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := validAttachment(t, tc.mode)
			if tc.change != nil {
				tc.change(&a)
			}
			for _, c := range []struct {
				full bool
				want string
			}{{true, tc.plug}, {false, tc.unplug}} {
				err := a.validate(c.full)
				switch {
				case c.want == "" && err != nil:
					t.Errorf("validate(full=%v) = %v, want valid", c.full, err)
				case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
					t.Errorf("validate(full=%v) = %v, want an error containing %q", c.full, err, c.want)
				case err != nil && !strings.Contains(err.Error(), a.NetnsPath):
					t.Errorf("error %q does not name the netns", err)
				}
			}
		})
	}
}

func TestHostIfName(t *testing.T) {
	for in, want := range map[string]string{
		"6f1d3b6e-6b43-4b3a-9f6a-0a1b2c3d4e5f": "tap6f1d3b6e-6b", // kuryr: "tap" + port_id[:11]
		"short":                                "tapshort",
	} {
		if got := HostIfName(in); got != want {
			t.Errorf("HostIfName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestVLANMTU(t *testing.T) {
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = "ens3", 1450
	parent := &netlink.Device{LinkAttrs: la}
	for _, tc := range []struct {
		network, want int
		err           string
	}{
		{0, 1450, ""},
		{1400, 1400, ""},
		{1450, 1450, ""},
		{1500, 0, "network MTU 1500 is larger than MTU 1450 of parent ens3"},
	} {
		got, err := vlanMTU(tc.network, parent)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("vlanMTU(%d) = %d, %v; want %d, %q", tc.network, got, err, tc.want, tc.err)
		}
	}
}

const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:25E0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 53135 1 0 100 0 0 10 0
   1: 0A00C70A:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 576 1 0 100 0 0 10 0
   2: 0A00C70A:280A 0B00C70A:A606 01 00000000:00000000 02:000000E7 00000000     0        0 58336 2 0 21 5 1 42 -1
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:280A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000B00C70A:280A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 000000FD000000000000000005000000:280A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
`

func TestParseProcNetTCP(t *testing.T) {
	for _, tc := range []struct {
		name, table string
		want        []string
	}{
		// the established connection on :10250 (state 01) is not a listener; 127.0.0.1:9696 is another port
		{"tcp", procNetTCP, []string{"10.199.0.10"}},
		{"tcp6", procNetTCP6, []string{"::", "10.199.0.11", "fd00::5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ips, err := parseProcNetTCP(strings.NewReader(tc.table), kubeletPort)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range ips {
				got = append(got, ip.String())
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := parseProcNetTCP(strings.NewReader("header\n 0: zz:280A 0:0 0A\n"), kubeletPort); err == nil {
		t.Error("a bad address parsed")
	}
}

type fakeParentSource struct {
	ifaces    []ifaceInfo
	listeners []net.IP
}

func (f fakeParentSource) links() ([]ifaceInfo, error)         { return f.ifaces, nil }
func (f fakeParentSource) kubeletListeners() ([]net.IP, error) { return f.listeners, nil }

func TestDetectParent(t *testing.T) {
	ip := net.ParseIP
	lo := ifaceInfo{name: "lo", index: 1, up: true, loopback: true, addrs: []net.IP{ip("127.0.0.1")}}
	ens3 := ifaceInfo{name: "ens3", index: 2, up: true, addrs: []net.IP{ip("10.0.0.5")}}
	ens4 := ifaceInfo{name: "ens4", index: 3, up: true, addrs: []net.IP{ip("192.168.0.5"), ip("fd00::5")}}
	down := ifaceInfo{name: "ens5", index: 4, addrs: []net.IP{ip("172.16.0.5")}}
	v6only := ifaceInfo{name: "ens6", index: 5, up: true, addrs: []net.IP{ip("fd01::5")}}
	bare := ifaceInfo{name: "ens7", index: 6, up: true}
	for _, tc := range []struct {
		name      string
		linkIface string
		ifaces    []ifaceInfo
		listeners []net.IP
		want      string
		err       string
	}{
		{name: "link_iface exists", linkIface: "ens4", ifaces: []ifaceInfo{lo, ens3, ens4}, listeners: []net.IP{ip("10.0.0.5")}, want: "ens4"},
		{name: "link_iface exists even without address", linkIface: "ens7", ifaces: []ifaceInfo{lo, ens3, bare}, want: "ens7"},
		{name: "link_iface missing: kubelet address", linkIface: "eth9", ifaces: []ifaceInfo{lo, ens3, ens4}, listeners: []net.IP{ip("192.168.0.5")}, want: "ens4"},
		{name: "kubelet on IPv6 address", ifaces: []ifaceInfo{lo, ens3, ens4}, listeners: []net.IP{ip("fd00::5")}, want: "ens4"},
		{name: "kubelet on two sockets: first up IPv4", ifaces: []ifaceInfo{lo, ens4, ens3}, listeners: []net.IP{ip("192.168.0.5"), ip("10.0.0.5")}, want: "ens3"},
		{name: "kubelet on wildcard: first up IPv4", ifaces: []ifaceInfo{lo, ens3, ens4}, listeners: []net.IP{ip("::")}, want: "ens3"},
		{name: "kubelet address on no link", ifaces: []ifaceInfo{lo, ens4}, listeners: []net.IP{ip("10.9.9.9")}, want: "ens4"},
		{name: "skips loopback, down, IPv6-only, address-less", ifaces: []ifaceInfo{v6only, lo, down, bare, ens4}, want: "ens4"},
		{name: "nothing", linkIface: "eth9", ifaces: []ifaceInfo{lo, down, v6only}, err: `[binding] link_iface "eth9" does not exist`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := detectParent(tc.linkIface, fakeParentSource{tc.ifaces, tc.listeners})
			if tc.err != "" {
				wantErrContaining(t, err, tc.err)
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("detectParent = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestDetectParentInNetns runs detection against a real netns: the first up IPv4 link, then the link
// holding kubelet's listen address once something listens on :10250 there, then link_iface.
func TestDetectParentInNetns(t *testing.T) {
	testutil.RequireRoot(t)
	node := newNS(t)
	detect := func(linkIface string) (string, error) {
		var name string
		err := doIn(node, func() error {
			var err error
			name, err = DetectParent(linkIface)
			return err
		})
		return name, err
	}
	if _, err := detect(""); err == nil {
		t.Fatal("detection in a netns with only loopback succeeded")
	}
	h := handleIn(t, node)
	addVethTo(t, h, "kp0", "kp1", nil)
	addVethTo(t, h, "kq0", "kq1", nil)
	addAddr(t, h, "kp1", "10.199.9.1/24")
	addAddr(t, h, "kq1", "10.199.9.2/24")
	if got, err := detect(""); err != nil || got != "kp1" {
		t.Errorf("DetectParent(\"\") = %q, %v; want kp1, the first up link with IPv4", got, err)
	}
	var ln net.Listener
	if err := doIn(node, func() error {
		var err error
		ln, err = net.Listen("tcp4", "10.199.9.2:10250")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got, err := detect("nosuchlink"); err != nil || got != "kq1" {
		t.Errorf("DetectParent with kubelet on 10.199.9.2:10250 = %q, %v; want kq1", got, err)
	}
	if got, err := detect("kq0"); err != nil || got != "kq0" {
		t.Errorf("DetectParent(\"kq0\") = %q, %v; want kq0", got, err)
	}
}
