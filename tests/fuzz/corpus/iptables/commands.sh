iptables -t nat -N ISTIO_REDIRECT
iptables -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-port 15001
iptables -t nat -N ISTIO_OUTPUT
iptables -t nat -A OUTPUT -p tcp -j ISTIO_OUTPUT
iptables -t nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -j ISTIO_REDIRECT
iptables -t nat -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
iptables -t nat -I ISTIO_OUTPUT 1 -d 203.0.113.0/24 -j RETURN
ip6tables -t nat -N ISTIO_OUTPUT
ip6tables -t nat -A OUTPUT -p tcp -j ISTIO_OUTPUT
ip6tables -t nat -A ISTIO_OUTPUT -d 2001:db8::/32 -j RETURN
ip6tables -t nat -A ISTIO_OUTPUT -p tcp -m tcp ! --dport 53 -j REDIRECT --to-ports 15001
iptables -t mangle -A PREROUTING -p tcp -m socket --transparent -j MARK --set-xmark 0x539/0xffffffff
iptables -t raw -A OUTPUT -p udp --dport 53 -j CT --zone 1
