package netns

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// kubeletPort is where kubelet listens; the interface holding that address faces the node's network,
// which is the one the trunk's VLANs ride on.
const kubeletPort = 10250

// DetectParent finds the VLAN parent (trunk port) link the way kuryr's _detect_iface_name does:
// [binding] link_iface when that link exists; else the link holding the address kubelet listens on
// (port 10250), when exactly one socket listens there on a specific address; else the first
// non-loopback link that is up and has an IPv4 address. It looks in the caller's netns.
func DetectParent(linkIface string) (string, error) {
	return detectParent(linkIface, systemSource{})
}

// parentSource is what detectParent reads from the system; unit tests replace it.
type parentSource interface {
	links() ([]ifaceInfo, error)
	kubeletListeners() ([]net.IP, error)
}

type ifaceInfo struct {
	name     string
	index    int
	up       bool
	loopback bool
	addrs    []net.IP
}

func detectParent(linkIface string, src parentSource) (string, error) {
	links, err := src.links()
	if err != nil {
		return "", fmt.Errorf("detect VLAN parent: %w", err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].index < links[j].index })
	if linkIface != "" {
		for _, l := range links {
			if l.name == linkIface {
				return l.name, nil
			}
		}
	}
	listeners, err := src.kubeletListeners()
	if err != nil {
		return "", fmt.Errorf("detect VLAN parent: %w", err)
	}
	if len(listeners) == 1 && !listeners[0].IsUnspecified() {
		for _, l := range links {
			for _, a := range l.addrs {
				if a.Equal(listeners[0]) {
					return l.name, nil
				}
			}
		}
	}
	for _, l := range links {
		if l.loopback || !l.up {
			continue
		}
		for _, a := range l.addrs {
			if a.To4() != nil {
				return l.name, nil
			}
		}
	}
	return "", fmt.Errorf("detect VLAN parent: [binding] link_iface %q does not exist, kubelet does not listen on :%d at exactly one local address, and no non-loopback link is up with an IPv4 address",
		linkIface, kubeletPort)
}

type systemSource struct{}

func (systemSource) links() ([]ifaceInfo, error) {
	ls, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make([]ifaceInfo, 0, len(ls))
	for _, l := range ls {
		a := l.Attrs()
		info := ifaceInfo{name: a.Name, index: a.Index, up: a.Flags&net.FlagUp != 0, loopback: a.Flags&net.FlagLoopback != 0}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			info.addrs = append(info.addrs, ad.IP)
		}
		out = append(out, info)
	}
	return out, nil
}

// kubeletListeners reads the calling thread's netns view of TCP sockets (thread-self, not self:
// /proc/self/net is the netns of the process's main thread).
func (systemSource) kubeletListeners() ([]net.IP, error) {
	var out []net.IP
	for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		fh, err := os.Open(f)
		if os.IsNotExist(err) {
			continue // no IPv6
		}
		if err != nil {
			return nil, fmt.Errorf("read listening sockets: %w", err)
		}
		ips, err := parseProcNetTCP(fh, kubeletPort)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", f, err)
		}
		out = append(out, ips...)
	}
	return out, nil
}

// parseProcNetTCP returns the local addresses of the sockets listening on port in a /proc/net/tcp or
// tcp6 table. Addresses there are hex in the kernel's byte order, 32-bit word by word.
func parseProcNetTCP(r io.Reader, port int) ([]net.IP, error) {
	const stateListen = "0A"
	var out []net.IP
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != stateListen {
			continue
		}
		host, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("bad local address %q", f[1])
		}
		p, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("bad port in %q: %w", f[1], err)
		}
		if int(p) != port {
			continue
		}
		raw, err := hex.DecodeString(host)
		if err != nil || (len(raw) != 4 && len(raw) != 16) {
			return nil, fmt.Errorf("bad address in %q", f[1])
		}
		ip := make(net.IP, len(raw))
		for i := 0; i < len(raw); i += 4 {
			binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4 // an IPv4-mapped listener on tcp6
		}
		out = append(out, ip)
	}
	return out, sc.Err()
}
