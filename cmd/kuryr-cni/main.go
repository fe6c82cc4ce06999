// kuryr-cni is the CNI plugin kubelet's runtime executes: it forwards every command to the node's
// kuryr-agent over a unix socket and prints the result. It never talks to Neutron or Kubernetes.
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/kuryr-pools/kuryr/cni"
	"github.com/kuryr-pools/kuryr/version"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println(version.String("kuryr-cni"))
		return
	}
	plugin := &cni.Plugin{
		Dial:          func(socket string) cni.Caller { return cni.NewClient(socket) },
		LocalTeardown: localTeardown,
	}
	skel.PluginMainFuncs(plugin.Funcs(), cniversion.PluginSupports("1.0.0", "1.1.0"), version.String("kuryr-cni"))
}
