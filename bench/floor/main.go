// Command floor is paramexec's start-up floor: it makes only the SDK calls
// paramexec makes to read a path, then execs the command, so that the
// start-up benchmark can tell what the SDK and the emulator cost from what
// paramexec adds.
//
// Usage: floor PATH COMMAND [ARGS...]
//
// Like paramexec it loads the SDK's default configuration, pages through
// GetParametersByPath (recursive, decrypted, ten a page, until NextToken is
// empty), adds every parameter to the environment under its last name
// segment and replaces itself with COMMAND. It checks nothing more: no
// naming rules, no retries beyond the SDK's own, no supervision.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: floor PATH COMMAND [ARGS...]")
		os.Exit(2)
	}
	if err := run(context.Background(), os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(3)
	}
}

func run(ctx context.Context, path string, argv []string) error {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	client := ssm.NewFromConfig(cfg)
	env := os.Environ()
	in := &ssm.GetParametersByPathInput{
		Path:           aws.String(path),
		Recursive:      aws.Bool(true),
		WithDecryption: aws.Bool(true),
		MaxResults:     aws.Int32(10),
	}
	for {
		page, err := client.GetParametersByPath(ctx, in)
		if err != nil {
			return fmt.Errorf("get parameters by path %s: %w", path, err)
		}
		for _, p := range page.Parameters {
			name := aws.ToString(p.Name)
			env = append(env, strings.ToUpper(name[strings.LastIndexByte(name, '/')+1:])+"="+aws.ToString(p.Value))
		}
		if aws.ToString(page.NextToken) == "" {
			break
		}
		in.NextToken = page.NextToken
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return fmt.Errorf("exec %s: %w", argv[0], syscall.Exec(bin, argv, env))
}
