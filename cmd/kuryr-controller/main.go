// kuryr-controller does the cluster-wide work: namespace subnets and their pool pre-population,
// and recovery of ports whose node or pod is gone. It never sits on the pod ADD path.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/kuryr-pools/kuryr/version"
)

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.String("kuryr-controller"))
		return
	}
	fmt.Fprintln(os.Stderr, "kuryr-controller: not implemented yet (issue 6)")
	os.Exit(2)
}
