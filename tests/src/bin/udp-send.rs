//! `udp-send HOST PORT COUNT`: COUNT datagrams to HOST:PORT from one unconnected UDP socket
//! (sendto with a destination each time, as DNS clients and UDP beacons send), 50 ms apart.

use std::{net::UdpSocket, process::ExitCode, thread, time::Duration};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port, count] = args.as_slice() else {
        eprintln!("usage: udp-send HOST PORT COUNT");
        return ExitCode::from(2);
    };
    let Ok(count) = count.parse::<u32>() else {
        eprintln!("udp-send: COUNT must be a number");
        return ExitCode::from(2);
    };
    let result = UdpSocket::bind("0.0.0.0:0").and_then(|socket| {
        for i in 0..count.min(1000) {
            socket.send_to(format!("beacon {i}").as_bytes(), format!("{host}:{port}"))?;
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-send: {e}");
            ExitCode::FAILURE
        }
    }
}
