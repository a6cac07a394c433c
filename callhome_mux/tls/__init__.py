"""callhome_mux.tls"""
