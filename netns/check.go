package netns

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// check compares the pod interface (and the host side) with the attachment and reports every
// difference in one error.
func check(ctx context.Context, a Attachment) error {
	h, err := openHandles(a.NetnsPath)
	if err != nil {
		return fmt.Errorf("check port %s: open netns %s: %w", a.PortID, a.NetnsPath, err)
	}
	defer h.close()
	fail := func(format string, args ...any) error {
		return fmt.Errorf("check port %s, %s in netns %s: %s", a.PortID, a.IfName, a.NetnsPath, fmt.Sprintf(format, args...))
	}
	l, err := h.ph.LinkByName(a.IfName)
	if err != nil {
		return fail("link not found: %v", err)
	}
	var bad []string
	mismatch := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }

	wantMTU := a.MTU
	switch a.Mode {
	case ModeVLAN:
		v, ok := l.(*netlink.Vlan)
		if !ok {
			return fail("link is a %s, want vlan", l.Type())
		}
		if v.VlanId != a.VLAN {
			mismatch("VLAN ID is %d, want %d", v.VlanId, a.VLAN)
		}
		parent, err := h.host.LinkByName(a.Parent)
		if err != nil {
			mismatch("parent %s: %v", a.Parent, err)
		} else {
			if v.ParentIndex != parent.Attrs().Index || v.NetNsID < 0 {
				mismatch("parent is ifindex %d (link netns id %d), want %s (ifindex %d in the node netns)",
					v.ParentIndex, v.NetNsID, a.Parent, parent.Attrs().Index)
			}
			if wantMTU == 0 {
				wantMTU = parent.Attrs().MTU
			}
		}
	default:
		if _, ok := l.(*netlink.Veth); !ok {
			return fail("link is a %s, want veth", l.Type())
		}
		hostName := HostIfName(a.PortID)
		hl, err := h.host.LinkByName(hostName)
		switch {
		case err != nil:
			mismatch("host veth %s: %v", hostName, err)
		case l.Attrs().ParentIndex != hl.Attrs().Index:
			mismatch("peer is ifindex %d, want host veth %s (ifindex %d)", l.Attrs().ParentIndex, hostName, hl.Attrs().Index)
		case hl.Attrs().Flags&net.FlagUp == 0:
			mismatch("host veth %s is down", hostName)
		}
		if a.Mode == ModeBridge && hl != nil {
			br, err := h.host.LinkByName(a.Bridge)
			if err != nil {
				mismatch("bridge %s: %v", a.Bridge, err)
			} else if hl.Attrs().MasterIndex != br.Attrs().Index {
				mismatch("host veth %s is not on bridge %s", hostName, a.Bridge)
			}
		}
		if a.Mode == ModeOVS {
			id, err := ovsIfaceID(ctx, a.OVSDB, hostName)
			if err != nil {
				mismatch("OVS interface %s: %v", hostName, err)
			} else if id != a.PortID {
				mismatch("OVS interface %s has iface-id %q, want %q", hostName, id, a.PortID)
			}
		}
		if wantMTU == 0 && hl != nil {
			wantMTU = hl.Attrs().MTU // the veth ends share the MTU Plug gave them
		}
	}
	attrs := l.Attrs()
	if !bytes.Equal(attrs.HardwareAddr, a.MAC) {
		mismatch("MAC is %s, want %s", attrs.HardwareAddr, a.MAC)
	}
	if wantMTU != 0 && attrs.MTU != wantMTU {
		mismatch("MTU is %d, want %d", attrs.MTU, wantMTU)
	}
	if attrs.Flags&net.FlagUp == 0 {
		mismatch("link is down")
	}

	addrs, err := h.ph.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fail("list addresses: %v", err)
	}
	for _, want := range a.Addresses {
		if !hasAddr(addrs, want) {
			mismatch("address %s missing", want.String())
		}
	}
	routes, err := h.ph.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fail("list routes: %v", err)
	}
	if a.Gateway != nil && !hasRoute(routes, defaultDst(a.Gateway), a.Gateway) {
		mismatch("default route via %s missing", a.Gateway)
	}
	for _, r := range a.Routes {
		if !hasRoute(routes, &r.Dst, r.GW) {
			mismatch("route %s via %v missing", r.Dst.String(), r.GW)
		}
	}
	if len(bad) > 0 {
		return fail("%s", strings.Join(bad, "; "))
	}
	return nil
}

func hasAddr(addrs []netlink.Addr, want net.IPNet) bool {
	for _, a := range addrs {
		if a.IPNet != nil && a.IP.Equal(want.IP) && bytes.Equal(normMask(a.Mask), normMask(want.Mask)) {
			return true
		}
	}
	return false
}

func hasRoute(routes []netlink.Route, dst *net.IPNet, gw net.IP) bool {
	for _, r := range routes {
		if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		if sameDst(r.Dst, dst) && r.Gw.Equal(gw) { // nil equals nil: a route without gateway
			return true
		}
	}
	return false
}

// sameDst compares route destinations, where netlink reports a default route either as nil or as
// 0.0.0.0/0 (::/0).
func sameDst(a, b *net.IPNet) bool {
	isDefault := func(n *net.IPNet) bool {
		if n == nil {
			return true
		}
		ones, _ := n.Mask.Size()
		return ones == 0 && n.IP.IsUnspecified()
	}
	if isDefault(a) || isDefault(b) {
		return isDefault(a) && isDefault(b)
	}
	return a.IP.Equal(b.IP) && bytes.Equal(normMask(a.Mask), normMask(b.Mask))
}

// normMask makes 4-byte and 16-byte IPv4 masks comparable.
func normMask(m net.IPMask) net.IPMask {
	if len(m) == net.IPv6len && bytes.Equal(m[:12], net.CIDRMask(96, 128)[:12]) {
		return m[12:]
	}
	return m
}

// defaultDst is the default route's destination in the gateway's family.
func defaultDst(gw net.IP) *net.IPNet {
	if gw.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

func cloneIPNet(n net.IPNet) *net.IPNet {
	ip, mask := n.IP, n.Mask
	if ip4 := ip.To4(); ip4 != nil {
		ip, mask = ip4, normMask(mask)
	}
	return &net.IPNet{IP: append(net.IP(nil), ip...), Mask: append(net.IPMask(nil), mask...)}
}
