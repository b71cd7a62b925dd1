package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/paramexec/paramexec/internal/handoff"
	"github.com/paramexec/paramexec/internal/listen"
	"github.com/paramexec/paramexec/internal/proxy"
)

// listFlag is a repeatable flag whose PARAMEXEC_* variable, like every
// repeatable flag's, is a comma-separated list: so a value holds no comma.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	if strings.TrimSpace(v) == "" {
		return errors.New("empty value")
	}
	return nil
}

// parseHandoff parses the --listen and --proxy values.
func parseHandoff(listens, proxies []string) ([]listen.Spec, []proxy.Spec, error) {
	ls, err := listen.ParseAll(listens)
	if err != nil {
		return nil, nil, err
	}
	var ps []proxy.Spec
	for _, v := range proxies {
		p, err := proxy.ParseSpec(v)
		if err != nil {
			return nil, nil, err
		}
		ps = append(ps, p)
	}
	return ls, ps, nil
}

// checkHandoff refuses --listen and --proxy settings that cannot work.
func (c *config) checkHandoff() error {
	seen := map[string]bool{}
	for _, p := range c.proxy {
		if seen[p.TargetEnv] {
			return fmt.Errorf("--proxy: two proxies give the child its port in %s", p.TargetEnv)
		}
		seen[p.TargetEnv] = true
	}
	if c.proxyProtocol && len(c.proxy) == 0 {
		return errors.New("--proxy-protocol only goes with --proxy")
	}
	return nil
}

// handoff is what internal/handoff needs of the flags. --ready-timeout
// also bounds how long a proxy holds a connection for a child that is not
// ready yet.
func (c *config) handoff() handoff.Options {
	return handoff.Options{
		Supervise:     c.supervise(),
		Print:         c.print,
		Listen:        c.listen,
		Proxy:         c.proxy,
		ProxyProtocol: c.proxyProtocol,
		Grace:         c.grace,
		HoldTimeout:   c.readyTimeout,
	}
}
