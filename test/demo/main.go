// Command demo creates and deletes pods through the real kuryr-cni binary against a running
// kuryr-agent, in real network namespaces, and prints what a newcomer wants to see: the pools
// before and after, each pod's IP and MAC, a TCP connection between two pods, ADD/DEL latency.
// hack/demo.sh starts the agent and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/test/cnirun"
)

func main() {
	pods := flag.Int("pods", 30, "how many pods to create and delete")
	binDir := flag.String("cni-bin", "bin", "directory holding kuryr-cni")
	cniSocket := flag.String("cni-socket", "/run/kuryr/cni.sock", "the agent's CNI socket")
	manageSocket := flag.String("manage-socket", manage.DefaultSocketPath, "the agent's management socket")
	cacheDir := flag.String("cache-dir", "/var/tmp/kuryr-demo/cni-cache", "libcni cache directory")
	flag.Parse()
	if err := run(*pods, *binDir, *cniSocket, *manageSocket, *cacheDir); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

func run(n int, binDir, cniSocket, manageSocket, cacheDir string) error {
	ctx := context.Background()
	conflist := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"kuryr","plugins":[{"type":"kuryr-cni","socketPath":%q,"logFile":"/var/tmp/kuryr-demo/kuryr-cni.log"}]}`, cniSocket)
	r, err := cnirun.NewRunner([]byte(conflist), cacheDir, binDir)
	if err != nil {
		return err
	}
	pools := manage.NewClient(manageSocket)
	showPools := func(when string) error {
		resp, err := pools.Do(ctx, "GET", manage.PathList, struct{}{}, false)
		if err != nil {
			return err
		}
		fmt.Printf("\n--- pools %s (kuryr-pools list)\n%s\n", when, strings.TrimSpace(string(resp.Body)))
		return nil
	}
	if err := showPools("before"); err != nil {
		return err
	}
	fmt.Printf("\n--- ADD of %d pods through %s/kuryr-cni\n%-10s %-16s %-18s %s\n", n, binDir, "pod", "IP", "MAC", "ADD")
	var all []*cnirun.Pod
	defer func() {
		for _, p := range all {
			_ = p.Close()
		}
	}()
	var adds, dels []time.Duration
	for i := 0; i < n; i++ {
		p, err := cnirun.NewPod("demo", fmt.Sprintf("pod-%02d", i))
		if err != nil {
			return err
		}
		all = append(all, p)
		d, err := r.Add(ctx, p)
		if err != nil {
			return err
		}
		adds = append(adds, d)
		fmt.Printf("%-10s %-16s %-18s %s\n", p.Name, p.Result.IPs[0].Address.IP, p.Result.Interfaces[0].Mac, d.Round(10*time.Microsecond))
	}
	if n >= 2 {
		if err := tcpBetween(all[0], all[1]); err != nil {
			return err
		}
		fmt.Printf("\nTCP %s -> %s:7777: connected, echoed \"hello\"\n", all[1].Name, all[0].Result.IPs[0].Address.IP)
		if err := r.Check(ctx, all[0]); err != nil {
			return fmt.Errorf("CHECK %s: %w", all[0].Name, err)
		}
		fmt.Printf("CHECK %s: ok (link, MAC, addresses and routes as plugged)\n", all[0].Name)
	}
	if err := showPools("with the pods running"); err != nil {
		return err
	}
	for _, p := range all {
		d, err := r.Del(ctx, p)
		if err != nil {
			return fmt.Errorf("DEL %s: %w", p.Name, err)
		}
		dels = append(dels, d)
	}
	if err := showPools("after DEL (released ports cool down, then return to their pool)"); err != nil {
		return err
	}
	fmt.Printf("\n--- latency through the real kuryr-cni binary (exec + agent + netlink)\nADD %s\nDEL %s\n", cnirun.Summarize(adds), cnirun.Summarize(dels))
	return nil
}

// tcpBetween connects from b to a listener in a's netns and checks an echo.
func tcpBetween(a, b *cnirun.Pod) error {
	var l net.Listener
	if err := a.NS.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(a.Result.IPs[0].Address.IP.String(), "7777"))
		return err
	}); err != nil {
		return fmt.Errorf("listen in %s: %w", a.Name, err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, io.LimitReader(c, 5))
	}()
	var c net.Conn
	if err := b.NS.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		return fmt.Errorf("connect from %s to %s: %w", b.Name, l.Addr(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		return fmt.Errorf("echo from %s: %q, %v", a.Name, buf, err)
	}
	return nil
}
