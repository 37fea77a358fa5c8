console.log(`hello from Node ${process.version} in the sandbox`);
