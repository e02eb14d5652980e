fn main() {
    println!("dualpub");
}
