// kuryr-pools is the operator CLI for a node's pools: create, free, list and show, against the
// agent's management socket (the successor of kuryr's contrib/pools-management/subports.py).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/version"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println(version.String("kuryr-pools"))
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := manage.RunCLI(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
