#!/bin/sh
echo "hello from $(uname -s) as uid $(id -u) in $(pwd)"
