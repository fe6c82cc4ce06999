// kuryr-agent is the per-node agent: it holds the node's pools of Neutron ports, serves kuryr-cni
// on a local socket, plugs ports into pod network namespaces and serves the pool management API.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/agent"
	"github.com/kuryr-pools/kuryr/config"
	"github.com/kuryr-pools/kuryr/version"
)

// defaultMemoryLimit is the Go runtime's soft memory limit (heap, stacks, runtime metadata; not the
// binary's text) unless GOMEMLIMIT says otherwise. The agent's live heap is a few MiB, but each
// Neutron listing and checkpoint write leaves garbage in proportion to the ports and pods, and with
// only GOGC the heap doubles past it before a collection and the pages stay resident afterwards.
const defaultMemoryLimit = 32 << 20

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("kuryr-agent", flag.ExitOnError)
	var configFiles config.Files
	configFiles.Register(fs)
	validate := fs.Bool("validate-config", false, "print the effective settings as JSON and exit (2 on an invalid configuration)")
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	nodeIP := fs.String("node-ip", os.Getenv("NODE_IP"), "this node's IP on a worker subnet, the trunk parent's (default $NODE_IP, else the Node object)")
	standalone := fs.Bool("standalone", false, "run without Kubernetes: every pod gets the [neutron_defaults] project, subnet and security groups")
	embedded := fs.Bool("embedded-neutron", false, "serve an in-memory Neutron stand-in with a test fixture and use it (demo and trials; implies --standalone)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	var install agent.Install
	fs.StringVar(&install.BinDir, "install-cni-bin-dir", "", "copy kuryr-cni into this directory at start (atomically)")
	fs.StringVar(&install.PluginPath, "cni-plugin", "", "the kuryr-cni binary to install (default: next to kuryr-agent)")
	fs.StringVar(&install.ConfDir, "install-cni-conf-dir", "", "write the CNI conflist into this directory once the agent is ready")
	fs.StringVar(&install.Template, "cni-conf-template", "/etc/kuryr/10-kuryr.conflist.template", "the conflist to install")
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println(version.String("kuryr-agent"))
		return 0
	}
	cfg, err := configFiles.Load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kuryr-agent: invalid configuration: %v\n", err)
		return 2
	}
	if *validate {
		out, err := cfg.RedactedJSON()
		if err != nil {
			fmt.Fprintf(os.Stderr, "kuryr-agent: %v\n", err)
			return 2
		}
		fmt.Println(string(out))
		for _, w := range cfg.Warnings() {
			fmt.Fprintf(os.Stderr, "warning: %s\n", w)
		}
		return 0
	}
	logger := klog.Background().WithValues("version", version.Version)
	for _, w := range cfg.Warnings() {
		logger.Info("configuration warning: " + w)
	}
	if u := cfg.Unknown(); len(u) > 0 {
		logger.V(1).Info("options this agent does not use", "options", u)
	}
	ctx, stop := signal.NotifyContext(klog.NewContext(context.Background(), logger), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if install.BinDir != "" && install.PluginPath == "" {
		if self, err := os.Executable(); err == nil {
			install.PluginPath = filepath.Join(filepath.Dir(self), "kuryr-cni")
		}
	}
	opts := agent.Options{Config: cfg, NodeName: *nodeName, NodeIP: *nodeIP, Standalone: *standalone || *embedded, Install: install}
	if *embedded {
		if opts.NodeIP, err = agent.StartEmbeddedNeutron(ctx, cfg, opts.NodeName); err != nil {
			logger.Error(err, "embedded Neutron")
			return 1
		}
	}
	if err := agent.Run(ctx, opts); err != nil {
		logger.Error(err, "kuryr-agent stopped")
		klog.Flush()
		return 1
	}
	klog.Flush()
	return 0
}
