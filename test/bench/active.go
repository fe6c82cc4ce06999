package main

import (
	"context"
	"errors"
)

func runActive(ctx context.Context, e *benchEnv) error {
	return errors.New("not yet")
}
